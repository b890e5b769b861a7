"""Faults through the real workflow, as a study meets them: a matrix of bad inputs mixed with good
sessions, and Snakemake killed with SIGKILL during segmentation and again during the measures.

Every bad session must fail alone with a reason that names its file, every good one must finish,
and after the kills a rerun must complete with nothing half-written left behind and every output
byte-identical to the uninterrupted run.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_cohort_workflow import TRUTH, cohort_config

from dnqsm.io import bids_path, read_tsv
from dnqsm.qc.views import world_centroid
from dnqsm.workflow.command import snakemake_command

MARKUP = "<script>window.__xss=1</script>"
BAD_ACQ_TIME = "2021-13-45T17:47:00"

# participant -> (failed stage, words the reason must contain); each participant has one session, ses-01
FAILING = {
    "900": ("preprocess", "cannot read as NIfTI"),  # truncated gzip
    "901": ("preprocess", "cannot read as NIfTI"),  # a text file named .nii.gz
    "902": ("preprocess", "expected a 3D image, got 4D"),
    "903": ("preprocess", "expected a 3D image, got 2D"),
    "904": ("preprocess", "no finite values"),  # all NaN
    "905": ("preprocess", "all values are zero"),
    "906": ("preprocess", "no finite values"),  # all infinite
    "907": ("segment", "dentate"),  # a slab above the cerebellum
    "908": ("preprocess", "a symbolic link to a missing file"),
    "909": ("preprocess", "orientation.allow_unknown"),  # sform and qform codes 0
}
FLIPPED, SCALED_INT16 = "910", "911"  # good images stored differently: they must finish like the original


def _chimap(bids: Path, participant: str) -> Path:
    path = bids_path(bids, participant, "01", "Chimap")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _copy_sidecar(bids: Path, participant: str) -> None:
    source = bids_path(bids, "001", "01", "Chimap").with_suffix("").with_suffix(".json")
    shutil.copyfile(source, _chimap(bids, participant).with_suffix("").with_suffix(".json"))


def make_matrix(bids: Path, tmp: Path) -> None:
    """Add one participant per bad or unusual input to a synthetic BIDS dataset."""
    original = bids_path(bids, "001", "01", "Chimap")
    good = nib.load(original)
    data = good.get_fdata(dtype=np.float32)
    _chimap(bids, "900").write_bytes(original.read_bytes()[:5000])
    _chimap(bids, "901").write_text("this is not an image\n")
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), good.affine), _chimap(bids, "902"))
    nib.save(nib.Nifti1Image(data[:, :, data.shape[2] // 2], good.affine), _chimap(bids, "903"))
    nib.save(nib.Nifti1Image(np.full(data.shape, np.nan, np.float32), good.affine), _chimap(bids, "904"))
    nib.save(nib.Nifti1Image(np.zeros(data.shape, np.float32), good.affine), _chimap(bids, "905"))
    nib.save(nib.Nifti1Image(np.full(data.shape, np.inf, np.float32), good.affine), _chimap(bids, "906"))
    canonical = nib.as_closest_canonical(good)
    labels = nib.as_closest_canonical(nib.load(bids_path(bids / TRUTH, "001", "01", "dseg", desc="dentate")))
    dn_z = world_centroid(np.asarray(labels.dataobj) > 0, canonical.affine)[2]
    k = int(np.ceil(nib.affines.apply_affine(np.linalg.inv(canonical.affine), [0, 0, dn_z + 45])[2]))
    nib.save(canonical.slicer[:, :, k:], _chimap(bids, "907"))
    _chimap(bids, "908").symlink_to(tmp / "moved-away.nii.gz")
    bare = nib.Nifti1Image(data, good.affine)
    bare.set_sform(None, code=0)
    bare.set_qform(None, code=0)
    nib.save(bare, _chimap(bids, "909"))
    for participant in ("907", "909"):
        _copy_sidecar(bids, participant)
    # good: the same voxels stored left-right flipped (LPS instead of RAS, or the reverse) ...
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = data.shape[0] - 1
    nib.save(nib.Nifti1Image(data[::-1], good.affine @ flip), _chimap(bids, FLIPPED))
    # ... and as int16 with a scaling slope and intercept (nibabel picks both)
    stored = nib.Nifti1Image(data, good.affine)
    stored.set_data_dtype(np.int16)
    nib.save(stored, _chimap(bids, SCALED_INT16))
    assert nib.load(_chimap(bids, SCALED_INT16)).dataobj.inter != 0, "the case under test: an intercept"
    for participant in (FLIPPED, SCALED_INT16):
        _copy_sidecar(bids, participant)
    # visit metadata: free text with markup, and a malformed acquisition time
    with open(bids / "participants.tsv", "a") as participants:
        participants.write(f"sub-{FLIPPED}\t{MARKUP}\tF\t50\tA\n")
    sessions = bids / "sub-001" / "sub-001_sessions.tsv"
    rows = sessions.read_text().splitlines()
    header = rows[0].split("\t")
    cells = rows[2].split("\t")
    cells[header.index("acq_time")] = BAD_ACQ_TIME
    rows[2] = "\t".join(cells)
    sessions.write_text("\n".join(rows) + "\n")


def snakemake_cmd(tmp: Path, *args: str) -> list[str]:
    return snakemake_command(tmp, "--keep-going", *args)


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(tmp, *args), capture_output=True, text=True, cwd=tmp)


def run_and_kill(tmp: Path, started, timeout: float = 600) -> None:
    """Start the workflow, wait until ``started()`` is true, then SIGKILL Snakemake and all its jobs at once
    (as a lost node or an out-of-memory killer would)."""
    with open(tmp / "killed-run.log", "w") as log:
        proc = subprocess.Popen(
            snakemake_cmd(tmp), stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not started():
            assert proc.poll() is None, (
                "the workflow ended before the moment to kill it: " + (tmp / "killed-run.log").read_text()[-2000:]
            )
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def files_under(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def leftovers(root: Path) -> list[str]:
    """Staging folders and temporary files of killed writers."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if (p.name.startswith(".") and not p.name.startswith(".snakemake")) or ".tmp" in p.name
    ]


def one_participant(source: Path, bids: Path) -> Path:
    """A copy of the shared small cohort with only its first participant (two visits)."""
    shutil.copytree(source, bids, ignore=shutil.ignore_patterns("sub-002*"))
    participants = (bids / "participants.tsv").read_text().splitlines()
    (bids / "participants.tsv").write_text("\n".join(r for r in participants if not r.startswith("sub-002")) + "\n")
    truth = (bids / TRUTH / "truth.tsv").read_text().splitlines()
    (bids / TRUTH / "truth.tsv").write_text("\n".join(r for r in truth if not r.startswith("sub-002")) + "\n")
    assert not list(bids.rglob("sub-002*")) and len(list(bids.glob("sub-001/ses-*"))) == 2
    return bids


@pytest.fixture(scope="module")
def faults(tmp_path_factory, small_cohort):
    """One uninterrupted run over the matrix (the reference), its outputs moved aside; then the same
    run in the same folders killed twice and finished."""
    tmp = tmp_path_factory.mktemp("faults")
    bids = one_participant(small_cohort, tmp / "bids")
    make_matrix(bids, tmp)
    config = cohort_config(tmp)
    config["inference"]["batch_size"] = 3
    (tmp / "config.yaml").write_text(json.dumps(config))
    reference = run(tmp)
    for name in ("out", "work"):
        os.rename(tmp / name, tmp / f"reference-{name}")
    return tmp, bids, reference


def test_bad_inputs_fail_alone_with_reasons_naming_their_file(faults):
    tmp, bids, reference = faults
    out = tmp / "reference-out"
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    failures = read_tsv(out / "cohort" / "failures.tsv")
    table = read_tsv(out / "cohort" / "desc-dentate_measures.tsv")
    assert set(failures.participant_id) == {f"sub-{p}" for p in FAILING}
    for row in failures.itertuples():
        stage, words = FAILING[row.participant_id[4:]]
        assert row.failed_stage == stage and words in row.error, row
        assert row.error.startswith(str(_chimap(bids, row.participant_id[4:]))), "names the input file first"
    assert f"{len(FAILING)} session(s) failed" in reference.stdout + reference.stderr
    finished = table[table.status != "failed"]
    assert set(finished.participant_id) == {"sub-001", f"sub-{FLIPPED}", f"sub-{SCALED_INT16}"}
    assert len(finished) == 4 and finished[["left_volume_mm3", "right_volume_mm3"]].notna().all().all()
    # a failed session has no labels, only its record saying why
    for participant in FAILING:
        anat = out / f"sub-{participant}" / "ses-01" / "anat"
        assert sorted(p.name for p in anat.iterdir() if not p.name.startswith(".")) == [
            f"sub-{participant}_ses-01_desc-dentate_measures.json"
        ]
        record = json.loads(next(anat.glob("*_measures.json")).read_text())
        assert record["status"] == "failed" and FAILING[participant][1] in record["error"]


def test_unusual_storage_gives_the_same_numbers(faults):
    tmp, _, _ = faults
    table = read_tsv(tmp / "reference-out" / "cohort" / "desc-dentate_measures.tsv").set_index("participant_id")
    original = table[table.session_id == "ses-01"].loc["sub-001"]
    for participant in (FLIPPED, SCALED_INT16):
        copy = table.loc[f"sub-{participant}"]
        for column in ("left_volume_mm3", "right_volume_mm3", "left_chi_mean_ppb", "right_chi_mean_ppb"):
            assert copy[column] == pytest.approx(original[column], rel=0.01, abs=0.5), (participant, column)
    record = json.loads(
        next((tmp / "reference-work" / "preprocess").glob(f"batch-*/sub-{SCALED_INT16}_ses-01/*.json")).read_text()
    )
    source = json.loads(next((tmp / "reference-work" / "preprocess").glob("batch-*/sub-001_ses-01/*.json")).read_text())
    # int16 zeros stay background (only voxels below the quantization step join them); 8.6 M brain voxels
    # instead of 2.0 M when the intercept turned every zero into 0.001 ppb
    assert record["brain_voxels"] == pytest.approx(source["brain_voxels"], rel=0.001), "int16 zeros stay background"


def test_metadata_problems_are_listed_and_markup_is_escaped(faults):
    tmp, bids, reference = faults
    out = tmp / "reference-out"
    problems = read_tsv(out / "cohort" / "metadata_problems.tsv")
    assert list(problems.columns) == ["file", "row", "column", "value", "problem"]
    bad_time = problems[problems.value == BAD_ACQ_TIME]
    assert len(bad_time) == 1 and bad_time.file.item().endswith("sub-001_sessions.tsv")
    assert "not an ISO 8601" in bad_time.problem.item()
    assert "metadata_problems.tsv" in reference.stdout + reference.stderr, "one console line says so"
    page = (out / "qc.html").read_text()
    # the page's data are JSON with < and > escaped (rendered as text; run in Chromium by test_cohort_workflow)
    assert MARKUP not in page and MARKUP.replace("<", "\\u003c").replace(">", "\\u003e") in page
    text = (out / "cohort" / "failures.tsv").read_text()
    assert '""' not in text, "plain tab-separated text, not CSV quoting"


def test_kill_during_segmentation_and_measures_then_rerun_gives_identical_outputs(faults):
    tmp, _, reference = faults
    assert reference.returncode == 0
    out, work = tmp / "out", tmp / "work"
    segment_logs = work / "logs" / "segment" / "nnunet"

    def segmenting() -> bool:  # a segmentation job has started and had a moment to write
        logs = list(segment_logs.glob("*.log")) if segment_logs.is_dir() else []
        return bool(logs) and time.time() - min(p.stat().st_mtime for p in logs) > 3

    run_and_kill(tmp, segmenting)
    assert not (out / "cohort").exists(), "killed before the cohort level"
    batches = (tmp / "reference-work" / "segment" / "nnunet").iterdir()
    assert not all((work / "segment" / "nnunet" / b.name).is_dir() for b in batches), "killed while segmenting"
    _assert_finished_files_are_complete(tmp)

    locked = run(tmp)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr  # README: then --unlock
    assert run(tmp, "--unlock").returncode == 0

    measure_logs = work / "logs" / "measure"
    already = set(measure_logs.glob("*.log")) if measure_logs.is_dir() else set()
    run_and_kill(tmp, lambda: measure_logs.is_dir() and bool(set(measure_logs.glob("*.log")) - already))
    _assert_finished_files_are_complete(tmp)
    assert run(tmp, "--unlock").returncode == 0

    rerun = run(tmp, "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert leftovers(out) == [] and leftovers(work) == []
    produced, expected = files_under(out), files_under(tmp / "reference-out")
    assert sorted(produced) == sorted(expected)
    differ = [name for name in expected if not filecmp.cmp(produced[name], expected[name], shallow=False)]
    assert differ == [], "outputs differ from the uninterrupted run"
    dry = run(tmp, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, "the finished rerun is complete"


def _assert_finished_files_are_complete(tmp: Path) -> None:
    """After a kill, every file at a final output path is whole: identical to the uninterrupted run's."""
    expected = files_under(tmp / "reference-out")
    for name, path in files_under(tmp / "out").items():
        if name.startswith(".") or "/." in name or path.name == ".snakemake_timestamp":
            continue  # staging of the killed job, removed by the job that reruns it
        assert name in expected, f"unexpected file {name}"
        assert filecmp.cmp(path, expected[name], shallow=False), f"half-written or different: {name}"
