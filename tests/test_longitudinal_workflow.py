"""The longitudinal mode through the workflow: planted change survives it, and a later visit reruns
only its own subject's longitudinal step.

8 participants (control, ataxia) x 3 visits (the shared `demo_cohort`): the cohort is run
cross-sectionally, then with `longitudinal.enabled` (the segmentations are reused). The planted
group x time effect on DN volume must lie inside the 95 % confidence interval in the longitudinal
mode, as the issue asks; the cross-sectional numbers are printed beside them for the record.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from dnqsm.io import bids_path, read_tsv
from test_stats import planted_volume_interaction
from test_workflow import REPO, jobs_by_rule, snakemake

TRUTH = "derivatives/manual"
TERM = "years:C(group)[T.ataxia]"


def config_for(tmp, bids, longitudinal: bool) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(bids_dir=str(bids), output_dir=str(tmp / "out"), work_dir=str(tmp / "work"))
    config["inference"]["batch_size"] = 12
    config["stats"]["covariates"] = ["baseline_age", "sex"]
    config["longitudinal"]["enabled"] = longitudinal
    return config


@pytest.fixture(scope="module")
def modes(demo_cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("longitudinal")
    bids = tmp / "bids"
    shutil.copytree(demo_cohort, bids)  # the test adds a visit later
    results = {}
    for name, on in (("cross-sectional", False), ("longitudinal", True)):
        run = snakemake(tmp, config_for(tmp, bids, on))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        results[name] = (read_tsv(tmp / "out" / "cohort" / "desc-dentate_measures.tsv"),
                         read_tsv(tmp / "out" / "stats" / "fixed_effects.tsv"),
                         read_tsv(tmp / "out" / "stats" / "models.tsv"),
                         read_tsv(tmp / "out" / "stats" / "sample_size.tsv"))
    return tmp, bids, results


def test_planted_volume_change_lies_inside_the_longitudinal_confidence_intervals(modes):
    _, bids, results = modes
    truth = read_tsv(bids / TRUTH / "truth.tsv")
    said = []
    for mode, (table, fixed, models, _) in results.items():
        # a visit whose prior did not fit (or a subject with one usable visit) keeps cross-sectional labels
        modes_seen = set(table.segmentation_mode.str.split(" ").str[0])
        assert mode in modes_seen and modes_seen <= {"cross-sectional", mode}, table.segmentation_mode.unique()
        assert all(mode in m for m in models.segmentation_mode)
        fixed = fixed.set_index(["measure", "term"])
        for side in ("left", "right"):
            planted = planted_volume_interaction(truth, side)
            row = fixed.loc[(f"{side}_volume_mm3", TERM)]
            said.append(f"{mode} {side}: planted {planted:.1f}, estimate {row.estimate:.1f} "
                        f"[{row.ci_low:.1f}, {row.ci_high:.1f}] mm3/year")
            if mode == "longitudinal":
                assert row.ci_low <= planted <= row.ci_high, said
    print("\n".join(said))


def test_labels_come_from_the_subject_prior_and_the_segmentations_are_reused(modes):
    tmp, _, results = modes
    records = [json.loads(p.read_text()) for p in sorted((tmp / "out").glob("sub-*/ses-*/anat/*_measures.json"))]
    subject = next(r["participant_id"] for r in records if r["segmentation_mode"] == "longitudinal")
    folder = next(f for f in sorted((tmp / "work" / "longitudinal" / "nnunet" / subject).iterdir()) if f.is_dir())
    meta = json.loads(next(folder.glob("*_metadata.json")).read_text())
    assert meta["longitudinal"]["visits"] >= 2 and meta["longitudinal"]["years"][0] == 0.0
    cross, long = results["cross-sectional"][0], results["longitudinal"][0]
    assert (cross.left_volume_mm3 != long.left_volume_mm3).any(), "the prior changed some labels"


def test_a_later_visit_reruns_only_its_subject(modes):
    tmp, bids, _ = modes
    config = config_for(tmp, bids, True)
    added = bids_path(bids, "002", "09", "Chimap")
    added.parent.mkdir(parents=True)
    shutil.copyfile(bids_path(bids, "002", "01", "Chimap"), added)
    try:
        plan = snakemake(tmp, config, "-n")
        assert plan.returncode == 0, plan.stderr[-2000:]
        jobs = jobs_by_rule(plan.stdout)
        assert jobs.get("longitudinal") == 1 and jobs.get("segment") == 1, jobs
        assert "sub-002" in plan.stdout.split("rule longitudinal:")[1].split("rule ")[0]
    finally:
        shutil.rmtree(added.parent.parent)


def test_sample_sizes_are_given_for_both_modes(modes):
    """The trial sizes each mode's measurement error leads to (README table): per arm, for slowing the
    patients' excess change by 30 %, from each mode's own subject slopes."""
    _, _, results = modes
    lines = []
    for mode, (*_, sizes) in results.items():
        volume = sizes[sizes.measure.str.endswith("volume_mm3") & (sizes.slowing == 0.3)]
        assert len(volume) >= 2 and (volume.n_per_arm > 0).all(), sizes
        lines += [f"{mode} {r.measure}: {r.n_per_arm}" for r in volume.itertuples()]
    print("\n".join(lines))
