"""Inference with the committed demo models on freshly generated images (real nnU-Net predictors)."""

from __future__ import annotations

import gzip
import inspect
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from scipy.spatial.transform import Rotation

from dnqsm.analysis.metrics import dice
from dnqsm.engine.segment import BUNDLED_MODELS, NnunetMethod, load_model_set, resolve_mirroring
from dnqsm.io import bids_path, read_tsv
from dnqsm.qc.views import world_centroid
from dnqsm.settings import defaults
from dnqsm.synth import write_dataset

TRUTH = "derivatives/manual"


@pytest.fixture(scope="module")
def segmenter():  # one pass per image (mirroring, the default, is tested on its own below): 5x faster here
    return NnunetMethod(load_model_set(BUNDLED_MODELS), device="cpu", threads=2, mirroring=False)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Two images from the `test` preset with seeds never used for training."""
    return write_dataset(tmp_path_factory.mktemp("fresh") / "bids", "test", subjects=2, sessions=1, seed=4242, jobs=2)


def _pairs(root):
    truth = read_tsv(root / TRUTH / "truth.tsv")
    for r in truth.itertuples():
        sub, ses = r.participant_id[4:], r.session_id[4:]
        yield bids_path(root, sub, ses, "Chimap"), bids_path(root / TRUTH, sub, ses, "dseg", desc="dentate")


def test_demo_models_segment_fresh_images_against_truth(segmenter, fresh, tmp_path):
    pairs = list(_pairs(fresh))
    records = segmenter.run([image for image, _ in pairs], tmp_path)
    for (image, labels_path), record in zip(pairs, records):
        assert record["status"] == "ok", record["error"]
        stem = record["stem"]
        folder = tmp_path / stem
        expected = {
            f"{stem}{s}"
            for s in (
                "_seg.nii.gz",
                "_cropped.nii.gz",
                "_cropped_seg.nii.gz",
                "_cropped_seg_labeled.nii.gz",
                "_cerebellar_mask.nii.gz",
                "_metadata.json",
                "_cropped_prob.nii.gz",
            )
        }
        assert {p.name for p in folder.iterdir()} == expected
        prob = nib.load(folder / f"{stem}_cropped_prob.nii.gz").get_fdata()  # the longitudinal mode's input
        labeled = np.asarray(nib.load(folder / f"{stem}_cropped_seg_labeled.nii.gz").dataobj) > 0
        assert 0 <= prob.min() and prob.max() <= 1 + 1e-6 and prob[labeled].mean() > 0.5 > prob[~labeled].mean()
        seg_img, img = nib.load(folder / f"{stem}_seg.nii.gz"), nib.load(image)
        assert seg_img.shape == img.shape and np.allclose(seg_img.affine, img.affine)
        assert nib.aff2axcodes(seg_img.affine) == nib.aff2axcodes(img.affine)
        pred, truth = np.asarray(seg_img.dataobj), np.asarray(nib.load(labels_path).dataobj)
        for label in (1, 2):
            assert dice(pred == label, truth == label) >= 0.8, (stem, label)
        left, right = world_centroid(pred == 1, seg_img.affine), world_centroid(pred == 2, seg_img.affine)
        assert left[0] < right[0]
        meta = json.loads((folder / f"{stem}_metadata.json").read_text())
        assert meta["models"]["segmentation"]["sha256"] and meta["box"]["min_mm"]
        assert meta["dentate"]["left"]["volume_mm3"] > 300 and meta["missing_sides"] == []


def _reoriented(img: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    return img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(codes))))


def test_segmentation_does_not_depend_on_voxel_orientation(segmenter, fresh, tmp_path):
    """RAS and LPS are the same physical image (lossless reordering). The oblique copy holds the same
    voxels under an affine rotated about the image centre; each result is mapped back to the RAS
    voxel grid (losslessly) and compared there."""
    image, _ = next(_pairs(fresh))
    ras = nib.as_closest_canonical(nib.load(image))
    lps = _reoriented(ras, "LPS")
    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xz", [14, -8], degrees=True).as_matrix()
    centre = nib.affines.apply_affine(ras.affine, (np.array(ras.shape) - 1) / 2)
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    oblique = nib.Nifti1Image(ras.get_fdata(dtype=np.float32), back @ rotation @ to_centre @ ras.affine)
    paths = {}
    for name, img in (("ras", ras), ("lps", lps), ("oblique", oblique)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        img.set_sform(img.affine, 1)
        img.set_qform(img.affine, 1)
        nib.save(img, paths[name])
    records = segmenter.run(list(paths.values()), tmp_path / "out")
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    seg = {name: nib.load(tmp_path / "out" / name / f"{name}_seg.nii.gz") for name in paths}
    reference = np.asarray(seg["ras"].dataobj)
    as_ras = {"lps": np.asarray(_reoriented(seg["lps"], "RAS").dataobj), "oblique": np.asarray(seg["oblique"].dataobj)}
    assert np.array_equal(as_ras["lps"], reference), "a lossless reorientation must give the identical result"
    for label in (1, 2):  # an oblique affine moves the world-aligned localization grid, so the crop differs a little
        assert dice(as_ras["oblique"] == label, reference == label) >= 0.93
    for name, img in seg.items():
        data = np.asarray(img.dataobj)
        assert world_centroid(data == 1, img.affine)[0] < world_centroid(data == 2, img.affine)[0], name


def test_bad_images_fail_alone_with_clear_messages(fresh, tmp_path):
    image, labels = next(_pairs(fresh))
    good = nib.load(image)
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"not a nifti")[:20])
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32) + 1, good.affine), four_d)
    all_nan = tmp_path / "all_nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((20, 20, 20), np.nan, np.float32), good.affine), all_nan)
    # a slab that misses the cerebellum: only what lies 45 mm or more above the dentate nuclei
    canonical = nib.as_closest_canonical(good)
    dn_z = world_centroid(np.asarray(nib.as_closest_canonical(nib.load(labels)).dataobj) > 0, canonical.affine)[2]
    k = int(np.ceil(nib.affines.apply_affine(np.linalg.inv(canonical.affine), [0, 0, dn_z + 45])[2]))
    slab = tmp_path / "slab.nii.gz"
    nib.save(canonical.slicer[:, :, k:], slab)
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnqsm.cli",
            "segment",
            "-i",
            str(image),
            str(corrupt),
            str(four_d),
            str(all_nan),
            str(slab),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "2",
            "--no-mirroring",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1, run.stderr
    meta = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/*_metadata.json")}
    good_stem = image.name.removesuffix(".nii.gz")
    assert meta[good_stem]["status"] == "ok", meta[good_stem]["review_reasons"]
    assert meta[good_stem]["review_reasons"] == []
    expected = {
        "corrupt": "cannot read as NIfTI",
        "four_d": "expected a 3D image",
        "all_nan": "no finite values",
        "slab": "dentate",
    }
    for stem, message in expected.items():
        assert meta[stem]["status"] == "failed" and message in meta[stem]["error"], meta[stem]["error"]
        assert str(tmp_path) in meta[stem]["error"], "the message names the file"
        assert sorted(p.name for p in (out / stem).iterdir()) == [f"{stem}_metadata.json"]
    assert "1 of 5 images segmented" in run.stdout
    assert not list(out.glob(".*")), "no staging folders left behind"


def test_review_status_reasons_exit_codes_and_threshold_overrides(fresh, tmp_path):
    image, _ = next(_pairs(fresh))
    stem = image.name.removesuffix(".nii.gz")

    def segment(*extra):
        out = tmp_path / f"out{len(extra)}"
        command = ["segment", "-i", str(image), "-o", str(out), "--device", "cpu", "--threads", "2", *extra]
        run = subprocess.run([sys.executable, "-m", "dnqsm.cli", *command], capture_output=True, text=True)
        return run, json.loads((out / stem / f"{stem}_metadata.json").read_text())

    # a good image under an absurd volume limit needs review: exit 0, reasons everywhere it is reported
    run, meta = segment("--check", "min_volume_mm3=100000")
    assert run.returncode == 0, run.stderr
    assert meta["status"] == "review"
    assert meta["options"]["mirroring"] is True, "test-time mirroring is on by default, on CPU too"
    assert meta["confidence"]["sides"]["left"]["mirror_agreement"] > 0.9
    assert any(r.startswith("left DN volume") and "below the plausible 100000 mm³" in r for r in meta["review_reasons"])
    assert meta["confidence"]["thresholds"]["min_volume_mm3"] == 100000
    assert 0.5 < meta["confidence"]["sides"]["left"]["mean_probability"] <= 1.0
    assert meta["confidence"]["sides"]["right"]["contrast_cnr"] > 1.0
    assert f"review  {stem}:" in run.stdout and "needs review: left DN volume" in run.stdout
    assert "0 ok, 1 need review, 0 failed" in run.stdout
    run, meta = segment("--check", "min_volume_mm3=100000", "--strict", "--no-mirroring")
    assert run.returncode == 3 and meta["status"] == "review" and meta["options"]["mirroring"] is False
    command = ["segment", "-i", str(image), "-o", str(tmp_path / "x"), "--check", "min_volume=3"]
    run = subprocess.run([sys.executable, "-m", "dnqsm.cli", *command], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown confidence check 'min_volume'" in run.stderr


def test_mirroring_is_on_by_default_and_auto_is_on_with_a_gpu_only():
    assert inspect.signature(NnunetMethod).parameters["mirroring"].default is True
    assert defaults("inference")["mirroring"] is True
    assert resolve_mirroring("auto", "cuda") is True and resolve_mirroring("auto", "cpu") is False
    assert resolve_mirroring(True, "cpu") is True and resolve_mirroring(False, "cuda") is False
    with pytest.raises(ValueError, match="mirroring must be true, false or 'auto'"):
        resolve_mirroring("yes", "cpu")


def test_with_mirroring_the_passes_are_compared(fresh, tmp_path):
    image, _ = next(_pairs(fresh))
    mirrored = NnunetMethod(load_model_set(BUNDLED_MODELS), device="cpu", threads=2, mirroring=True)
    record = mirrored.run([image], tmp_path)[0]
    for side in ("left", "right"):
        assert record["confidence"]["sides"][side]["mirror_agreement"] > 0.9, record["confidence"]["sides"][side]
    assert record["status"] == "ok", record["review_reasons"]
