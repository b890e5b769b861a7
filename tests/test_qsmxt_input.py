"""A QSMxT derivative dataset as input, with two reconstructions of one session processed side by side.

QSMxT writes its maps as a BIDS derivative (``DatasetType: derivative``, uncompressed ``.nii``, in ppm,
``run-`` and ``acq-`` entities, other maps beside the ``_Chimap``). Each reconstruction of a session is
its own entry: its entities are in every derivative name, the cohort table tells them apart by
``image_entities``, and the statistics model one image per session (and say which they left out).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from config_helpers import default_config
from test_workflow import snakemake

from dnqsm.io import bids_path, read_tsv
from dnqsm.workflow.preprocess import preprocess


def qsmxt_dataset(root: Path, demo: Path) -> Path:
    """A small demo cohort rewritten as QSMxT would: ppm, .nii, run-1; session 01 of sub-001 also has a
    second reconstruction (acq-fast, values x 0.9) and every folder has other QSMxT maps."""
    out = root / "derivatives" / "qsmxt"
    for image in sorted(demo.glob("sub-*/ses-*/anat/*_Chimap.nii.gz")):
        sub, ses = image.name.split("_")[:2]
        img, _ = preprocess(image, "auto")  # in ppb, whatever unit the demo site stored
        ppm = nib.Nifti1Image(img.get_fdata(dtype=np.float32) / 1000.0, img.affine)
        anat = out / sub / ses / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        nib.save(ppm, anat / f"{sub}_{ses}_run-1_Chimap.nii")
        nib.save(
            nib.Nifti1Image(np.ones(img.shape, np.float32) * 30, img.affine), anat / f"{sub}_{ses}_run-1_T2starmap.nii"
        )
        if (sub, ses) == ("sub-001", "ses-01"):
            second = nib.Nifti1Image(ppm.get_fdata(dtype=np.float32) * 0.9, img.affine)
            nib.save(second, anat / f"{sub}_{ses}_acq-fast_run-1_Chimap.nii")
    (out / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "QSMxT outputs",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "QSMxT", "Version": "8.0.0"}],
            }
        )
    )
    return out  # like QSMxT's, without participants.tsv or sessions.tsv


def test_qsmxt_derivative_with_two_reconstructions_of_a_session(tmp_path, small_cohort):
    bids = qsmxt_dataset(tmp_path, small_cohort)
    config = default_config()
    config.update(bids_dir=str(bids), output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"))
    config["inference"]["batch_size"] = 3
    run = snakemake(tmp_path, config)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"

    table = read_tsv(out / "cohort" / "desc-dentate_measures.tsv")
    assert len(table) == 5 and list(table.columns[:3]) == ["participant_id", "session_id", "image_entities"]
    first = table[(table.participant_id == "sub-001") & (table.session_id == "ses-01")].set_index("image_entities")
    assert sorted(first.index) == ["acq-fast_run-1", "run-1"]
    assert (first.status == "ok").all() and (table.input_unit == "ppm").all(), table[["status", "input_unit"]]
    # the same labels on both reconstructions (same grid and anatomy), chi scaled by 0.9
    assert first.loc["acq-fast_run-1", "left_volume_mm3"] == first.loc["run-1", "left_volume_mm3"]
    ratio = first.loc["acq-fast_run-1", "left_chi_mean_ppb"] / first.loc["run-1", "left_chi_mean_ppb"]
    assert abs(ratio - 0.9) < 0.01, ratio

    anat = out / "sub-001" / "ses-01" / "anat"
    names = {p.name for p in anat.iterdir()}
    for stem in ("sub-001_ses-01_run-1", "sub-001_ses-01_acq-fast_run-1"):
        assert {
            f"{stem}_desc-dentate_dseg.nii.gz",
            f"{stem}_desc-dentate_measures.json",
            f"{stem}_desc-localization_mask.nii.gz",
        } <= names, names
        assert (out / "sub-001" / "ses-01" / "figures" / f"{stem}_desc-dentate_qc.png").exists()
        record = json.loads((anat / f"{stem}_desc-dentate_measures.json").read_text())
        assert record["image_entities"] == stem.split("ses-01_")[1]
        assert record["source"].endswith(f"{stem}_Chimap.nii")
    dseg = nib.load(bids_path(out, "001", "01", "dseg", run="1", desc="dentate"))
    assert dseg.shape == nib.load(bids / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_run-1_Chimap.nii").shape

    # one image per session for the models, and the notes say which was left out; without visit times
    # (no sessions.tsv) nothing longitudinal is modelled, which the notes say too (not a failed run)
    notes = json.loads((out / "stats" / "models.json").read_text())["notes"]["Levels"]
    assert any("sub-001_ses-01_run-1" in n and "another image of the same session" in n for n in notes), notes
    assert any("no visit times" in n for n in notes), notes
    problems = read_tsv(out / "cohort" / "metadata_problems.tsv")
    assert len(problems) and problems.problem.str.contains("file missing").any(), problems
    page = (out / "qc.html").read_text()
    assert (
        "sub-001_ses-01_acq-fast_run-1" in page and "figures/sub-001_ses-01_acq-fast_run-1_desc-dentate_qc.png" in page
    )
