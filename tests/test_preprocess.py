"""Preprocessing: units settled from the sidecar, the config or the values, and implausible images refused."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from dnqsm.io import InputError
from dnqsm.workflow.pipeline import preproc_files, preprocess_session
from dnqsm.workflow.preprocess import preprocess


def qsm(tmp_path, name="img", scale=1.0, units=None, nan_outside=False, dtype=np.float32):
    """A small masked 'QSM' image in ppm x scale: a bright blob in tissue at 0.02 ppm, zero outside."""
    rng = np.random.default_rng(0)
    data = rng.normal(0, 0.02, (24, 24, 24)).astype(np.float32)
    data[8:14, 8:14, 8:14] += 0.12
    outside = np.ones(data.shape, bool)
    outside[3:21, 3:21, 3:21] = False
    data[outside] = np.nan if nan_outside else 0
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image((data * scale).astype(dtype), affine), path)
    if units:
        (tmp_path / f"{name}.json").write_text(json.dumps({"Units": units}))
    return path


@pytest.mark.parametrize(
    "scale, units, policy, expected, source",
    [
        (1.0, "ppm", "auto", "ppm", "sidecar"),
        (1000.0, "ppb", "auto", "ppb", "sidecar"),
        (1.0, None, "auto", "ppm", "detected from values"),
        (1000.0, None, "auto", "ppb", "detected from values"),
        (1000.0, None, "ppb", "ppb", "config"),
    ],
)
def test_unit_is_settled_and_values_end_in_ppb(tmp_path, scale, units, policy, expected, source):
    img, record = preprocess(qsm(tmp_path, scale=scale, units=units), policy)
    assert (record["input_unit"], record["input_unit_source"]) == (expected, source)
    data = img.get_fdata()
    assert 100 < data[8:14, 8:14, 8:14].mean() < 140, "the blob is 0.12 ppm = 120 ppb whatever the input unit"
    assert record["Units"] == "ppb"


def test_nan_outside_the_brain_becomes_zero_and_is_counted(tmp_path):
    img, record = preprocess(qsm(tmp_path, units="ppm", nan_outside=True), "auto")
    assert np.isfinite(img.get_fdata()).all()
    assert record["nonfinite_voxels_set_to_zero"] == 24**3 - 18**3


@pytest.mark.parametrize(
    "scale, units, policy, message",
    [
        (1000.0, "ppm", "auto", "implausible for unit ppm (sidecar)"),  # ppb values labelled ppm
        (1.0, None, "ppb", "implausible for unit ppb (config)"),  # ppm values declared ppb
        (1e-5, None, "auto", "cannot tell the unit"),  # odd scaling
        (1.0, None, "sidecar", "no JSON sidecar with 'Units'"),
        (1.0, "Hz", "auto", "not a susceptibility unit"),
    ],
)
def test_implausible_or_unknown_units_are_refused_naming_the_file(tmp_path, scale, units, policy, message):
    path = qsm(tmp_path, scale=scale, units=units)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        preprocess(path, policy)
    assert str(path) in str(info.value)


def test_bad_image_gives_a_failure_record_and_no_image(tmp_path):
    zeros = tmp_path / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), zeros)
    out = tmp_path / "sub-01_ses-01"
    record = preprocess_session(zeros, out, "auto")
    assert record["status"] == "failed" and record["failed_stage"] == "preprocess"
    assert "all values are zero" in record["error"] and str(zeros) in record["error"]
    image, record_file = preproc_files(out)
    assert not image.exists() and json.loads(record_file.read_text()) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01_ses-01", "zeros.nii.gz"], "no staging left"


def test_int16_with_an_intercept_keeps_the_background_at_exactly_zero(tmp_path):
    """nibabel stores int16 with scl_slope and scl_inter; raw 'zero' then reads as ~0.001 ppb, which
    would count as brain. The loader makes those voxels exactly 0 again."""
    path = qsm(tmp_path, units="ppm")
    float_img = nib.load(path)
    stored = nib.Nifti1Image(float_img.get_fdata(dtype=np.float32), float_img.affine)
    stored.set_data_dtype(np.int16)
    nib.save(stored, tmp_path / "int16.nii.gz")
    (tmp_path / "int16.json").write_text(json.dumps({"Units": "ppm"}))
    reread = nib.load(tmp_path / "int16.nii.gz")
    assert reread.dataobj.inter and np.count_nonzero(np.asanyarray(reread.dataobj)) > 18**3, "the case under test"
    img, _ = preprocess(tmp_path / "int16.nii.gz", "auto")
    data = img.get_fdata()
    assert np.count_nonzero(data) == 18**3
    assert np.allclose(data, float_img.get_fdata() * 1000, atol=0.5)


def test_a_rerun_removes_what_a_killed_writer_left(tmp_path):
    from dnqsm.io import staged_folder, write_json

    final = tmp_path / "anat"
    stale_dir = tmp_path / ".anat.k1ll3d"
    stale_dir.mkdir()
    (stale_dir / "half.json").write_text("{")
    stale_file = tmp_path / "anat.json"
    leftover = tmp_path / ".anat.abc123.tmp.json"
    leftover.write_text("{")
    with staged_folder(final) as folder:
        (folder / "done.txt").write_text("ok")
    write_json(stale_file, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anat", "anat.json"]


def test_an_image_without_orientation_fails_unless_overridden(tmp_path):
    path = qsm(tmp_path, units="ppm")
    img = nib.load(path)
    bare = nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine)
    bare.set_sform(None, code=0)
    bare.set_qform(None, code=0)
    nib.save(bare, tmp_path / "bare.nii.gz")
    (tmp_path / "bare.json").write_text(json.dumps({"Units": "ppm"}))
    with pytest.raises(InputError, match="orientation.allow_unknown: true; dnqsm segment: --allow-unknown-orientation"):
        preprocess(tmp_path / "bare.nii.gz", "auto")
    out, record = preprocess(tmp_path / "bare.nii.gz", "auto", allow_unknown_orientation=True)
    assert record["orientation_assumed"] is True
    assert int(out.header["sform_code"]) == 1, "later steps read it as scanner space"
