"""The Snakemake workflow as users run it: real snakemake, config validated against the schema."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from config_helpers import REPO

from dnqsm.io import bids_path
from dnqsm.settings import defaults
from dnqsm.workflow.command import snakemake_command


def snakemake(
    workdir: Path, config: dict, *args: str, snakefile: Path = REPO / "Snakefile"
) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = snakemake_command(workdir, *args, snakefile=snakefile)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)


def jobs_by_rule(dry_run_output: str) -> dict[str, int]:
    """Snakemake's dry-run job-stats table as {rule: count}."""
    table = dry_run_output.split("Job stats:")[-1]
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"
    }


def plan_with_new_visit(workdir: Path, config: dict, bids: Path, subject: str) -> tuple[dict[str, int], str]:
    """Dry run of a finished cohort when a new visit (a copy of the subject's visit 01, as ses-09)
    arrives; the visit is removed again afterwards. Returns (jobs by rule, Snakemake's output)."""
    added = bids_path(bids, subject, "09", "Chimap")
    added.parent.mkdir(parents=True)
    shutil.copyfile(bids_path(bids, subject, "01", "Chimap"), added)
    try:
        plan = snakemake(workdir, config, "-n")
        assert plan.returncode == 0, plan.stderr[-2000:]
        return jobs_by_rule(plan.stdout), plan.stdout
    finally:
        shutil.rmtree(added.parent.parent)


def planned_sessions(workdir: Path, config: dict, run: subprocess.CompletedProcess) -> list[str]:
    """The sessions a (dry) run planned: the session manifest the main process wrote (jobs run per
    batch, so job counts do not say how many sessions were selected)."""
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return (workdir / config["work_dir"] / "batches.tsv").read_text().splitlines()[1:]


def synth_config(out: Path, **extra) -> dict:
    """The default config with a one-image synthetic cohort (a --configfile replaces the whole config)."""
    config = defaults()
    config["synth"] = {"out": str(out), "preset": "demo", "subjects": 1, "sessions": 1, "seed": 0, **extra}
    return config


def test_workflow_generates_the_cohort_and_a_rerun_does_nothing(tmp_path):
    run = snakemake(tmp_path, synth_config(tmp_path / "bids"), "synth_cohort")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "bids" / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_Chimap.nii.gz").exists()
    again = snakemake(tmp_path, synth_config(tmp_path / "bids"), "-n", "synth_cohort")
    assert again.returncode == 0, again.stderr
    assert "Nothing to be done" in again.stdout + again.stderr
    # another generator would draw other images, so the cohort is planned again: a stale demo cohort
    # is never kept. Here: a copy of the workflow whose synthesis source differs by a comment
    # (Snakemake imports dnqsm from beside the Snakefile it runs)
    workflow = tmp_path / "other_workflow"
    for part in ("rules", "scripts", "config", "envs", "dnqsm"):
        shutil.copytree(REPO / part, workflow / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "Snakefile", workflow / "Snakefile")
    with (workflow / "dnqsm" / "synth" / "physics.py").open("a") as source:
        source.write("# a changed generator\n")
    changed = snakemake(
        tmp_path, synth_config(tmp_path / "bids"), "-n", "synth_cohort", snakefile=workflow / "Snakefile"
    )
    assert changed.returncode == 0, changed.stderr
    assert jobs_by_rule(changed.stdout) == {"synth_cohort": 1}, changed.stdout[-2000:]
    assert "params" in changed.stdout.lower(), changed.stdout[-2000:]  # Snakemake's reason: params changed


def test_the_schema_offers_every_synthesis_preset_and_only_those():
    """`snakemake synth_cohort` must reach every preset the CLI can make (stress, retest, wide too)."""
    from dnqsm.synth import PRESETS

    schema = yaml.safe_load((REPO / "config" / "config.schema.yaml").read_text())
    assert schema["properties"]["synth"]["properties"]["preset"]["enum"] == list(PRESETS)


def test_unknown_config_key_fails_validation_naming_it(tmp_path):
    run = snakemake(tmp_path, synth_config(tmp_path / "bids", subjetcs=3), "-n")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "config synth: Additional properties are not allowed ('subjetcs' was unexpected)" in output
    assert len(output.strip().splitlines()) < 15, "one clear line, not the whole schema and config"


def test_nested_config_overrides_on_the_command_line_are_typed_by_the_schema(tmp_path):
    config = synth_config(tmp_path / "bids")
    run = snakemake(
        tmp_path,
        config,
        "-n",
        "synth_cohort",
        "--config",
        "synth={out: " + str(tmp_path / "b") + ", preset: demo, subjects: 2, sessions: 1, seed: 3}",
        "inference={batch_size: 2, device: cpu, "
        "folds: null, mirroring: false, threads: 1, mem_mb: 4000, runtime_min: 30}",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    bad = snakemake(tmp_path, config, "-n", "--config", "inference={batch_size: two}")
    assert (
        bad.returncode != 0 and "config inference.batch_size: 'two' is not of type 'integer'" in bad.stdout + bad.stderr
    )


def test_wrong_config_type_fails_validation_naming_it(tmp_path):
    config = synth_config(tmp_path / "bids")
    config["synth"]["subjects"] = "many"
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0
    assert "'many' is not of type 'integer'" in run.stdout + run.stderr
    config = synth_config(tmp_path / "bids")
    config["inference"]["mirroring"] = "sometimes"  # true, false or auto
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0 and "config inference.mirroring: 'sometimes' is not valid" in run.stdout + run.stderr


def test_missing_bids_dir_is_named(tmp_path):
    config = synth_config(tmp_path / "bids")
    config["bids_dir"] = str(tmp_path / "no_such_dataset")
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0
    assert f"bids_dir {tmp_path / 'no_such_dataset'} does not exist" in run.stdout + run.stderr


def test_participant_filters_select_sessions_and_a_typo_is_named(tmp_path, small_cohort):
    config = synth_config(tmp_path / "unused")
    config["bids_dir"] = str(small_cohort)  # 2 participants x 2 visits; a dry run only reads it
    assert len(planned_sessions(tmp_path, config, snakemake(tmp_path, config, "-n"))) == 4
    config["exclude_sessions"] = ["sub-002_ses-01"]
    assert len(planned_sessions(tmp_path, config, snakemake(tmp_path, config, "-n"))) == 3
    config.update(participant_label=["sub-001", "002"], exclude_participant_label=["002"], exclude_sessions=[])
    assert [row.split("\t")[0] for row in planned_sessions(tmp_path, config, snakemake(tmp_path, config, "-n"))] == [
        "sub-001_ses-01",
        "sub-001_ses-02",
    ]
    config["participant_label"] = ["sub-042"]
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0 and "participant '042'" in run.stdout + run.stderr


def test_bids_filters_pick_images_and_several_reconstructions_are_entries(tmp_path, small_cohort):
    config = synth_config(tmp_path / "unused")
    bids = Path(shutil.copytree(small_cohort, tmp_path / "bids"))  # images are added to a copy
    config["bids_dir"] = str(bids)
    anat = bids / "sub-001" / "ses-01" / "anat"
    shutil.copyfile(anat / "sub-001_ses-01_Chimap.nii.gz", anat / "sub-001_ses-01_rec-l2_Chimap.nii.gz")
    both = planned_sessions(tmp_path, config, snakemake(tmp_path, config, "-n"))
    assert [row.split("\t")[0] for row in both] == [
        "sub-001_ses-01",
        "sub-001_ses-01_rec-l2",
        "sub-001_ses-02",
        "sub-002_ses-01",
        "sub-002_ses-02",
    ]
    assert both[1].endswith("\trec-l2"), "the manifest keeps the entities, so cluster jobs see the same entries"
    shutil.copyfile(anat / "sub-001_ses-01_Chimap.nii.gz", anat / "sub-001_ses-01_desc-x_Chimap.nii.gz")
    ambiguous = snakemake(tmp_path, config, "-n")
    assert ambiguous.returncode != 0
    said = ambiguous.stdout + ambiguous.stderr
    assert (
        "that only desc tell apart, e.g. sub-001_ses-01: sub-001_ses-01_Chimap.nii.gz, "
        "sub-001_ses-01_desc-x_Chimap.nii.gz" in said
    )
    assert "Traceback" not in said, "one clear line"
    picked = snakemake(tmp_path, config, "-n", "--config", "bids_filters={rec: null, desc: null}")
    assert len(planned_sessions(tmp_path, config, picked)) == 4
    only_l2 = snakemake(tmp_path, config, "-n", "--config", "bids_filters={rec: l2}")
    assert [row.split("\t")[-2] for row in planned_sessions(tmp_path, config, only_l2)] == [
        str(anat / "sub-001_ses-01_rec-l2_Chimap.nii.gz")
    ]


def test_missing_manual_labels_folder_is_named(tmp_path):
    config = synth_config(tmp_path / "bids")
    config["validation"]["labels_dir"] = str(tmp_path / "no_labels")
    run = snakemake(tmp_path, config, "-n", "synth_cohort")
    assert (
        run.returncode != 0
        and f"validation.labels_dir {tmp_path / 'no_labels'} does not exist" in run.stdout + run.stderr
    )


def test_unwritable_output_is_said_at_the_start_in_one_line(tmp_path):
    config = synth_config(tmp_path / "bids")
    (tmp_path / "a_file").write_text("not a folder")
    config["output_dir"] = str(tmp_path / "a_file" / "out")
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0
    assert (
        f"output_dir {tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is a file, not a folder"
        in run.stdout + run.stderr
    )
