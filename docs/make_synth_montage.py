"""Render docs/synth_montage.png: subjects of each preset (two of train and stress), views through the dentate nuclei.

Usage: python docs/make_synth_montage.py [--out docs/synth_montage.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from dnqsm.io import bids_path, read_tsv
from dnqsm.names import dentate_labels
from dnqsm.qc.views import reslice, world_centroid
from dnqsm.synth import write_dataset
from dnqsm.synth.acquisition import pose_from_truth
from dnqsm.units import to_ppb

GRAY = matplotlib.colormaps["gray"].with_extremes(bad="black")
PRESETS = (("demo", 1), ("train", 2), ("train", 5), ("external", 4), ("stress", 3), ("stress", 8))
BASAL_GANGLIA_MNI = np.array([0.0, -2.0, 2.0])
VIEWS = (("axial", 95.0, 0.8), ("axial", 22.0, 0.25), ("coronal", 22.0, 0.25), ("sagittal", 22.0, 0.25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/synth_montage.png")
    args = parser.parse_args()
    fig, axes = plt.subplots(
        len(PRESETS), 5, figsize=(12.5, 2.6 * len(PRESETS)), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1]}
    )
    with tempfile.TemporaryDirectory() as tmp:
        for row, (preset, seed) in enumerate(PRESETS):
            root = write_dataset(Path(tmp) / f"{preset}-{seed}", preset, subjects=1, sessions=1, seed=seed)
            truth = read_tsv(root / "derivatives/manual/truth.tsv").iloc[0]
            image = nib.load(bids_path(root, "001", "01", "Chimap"))
            unit = json.loads(bids_path(root, "001", "01", "Chimap", ".json").read_text())["Units"]
            values = to_ppb(image.get_fdata(), unit)
            seg_img = nib.load(dentate_labels(root / "derivatives/manual", "001", "01"))
            seg = np.asarray(seg_img.dataobj)
            left, right = world_centroid(seg == 1, seg_img.affine), world_centroid(seg == 2, seg_img.affine)
            pose = pose_from_truth(truth)
            deep = pose[:3, :3] @ BASAL_GANGLIA_MNI + pose[:3, 3]
            for col, (view, half, step) in enumerate(VIEWS):
                center = deep if half > 50 else left if view == "sagittal" else (left + right) / 2
                ax = axes[row, col]
                ax.imshow(
                    reslice(values, image.affine, center, view, half, step),
                    origin="lower",
                    cmap=GRAY,
                    vmin=-60,
                    vmax=160,
                    interpolation="nearest",
                )
                ax.set_xticks([]), ax.set_yticks([])
                if row == 0:
                    ax.set_title(
                        f"{view}" + (" (basal ganglia)" if half > 50 else " (left DN)" if view == "sagittal" else ""),
                        fontsize=9,
                    )
            ax = axes[row, 4]
            zoom = reslice(values, image.affine, (left + right) / 2, "axial", 22.0, 0.25)
            labels = reslice(seg, seg_img.affine, (left + right) / 2, "axial", 22.0, 0.25, order=0)
            ax.imshow(zoom, origin="lower", cmap=GRAY, vmin=-60, vmax=160, interpolation="nearest")
            ax.contour(labels == 1, [0.5], colors="#ff4040", linewidths=0.8)
            ax.contour(labels == 2, [0.5], colors="#40c0ff", linewidths=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title("truth: left = 1 (red), right = 2 (blue)", fontsize=9)
            vox = "x".join(f"{truth[f'voxel_{a}_mm']:.2f}" for a in "xyz")
            axes[row, 0].set_ylabel(
                f"{preset}\n{vox} mm, {truth.acq_orientation}"
                + (f" obl {truth.acq_oblique_deg:+.0f}°" if truth.acq_oblique_deg else "")
                + f"\n{truth.recon_inversion}, ref {truth.recon_reference}, age {truth.baseline_age:.0f}"
                + f"\n{unit}, {truth.acq_dtype}",
                fontsize=8,
            )
    fig.suptitle(
        "dnqsm synth: synthetic QSM (ppb, window -60..160), world-aligned views, subject's left on the left",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    from PIL import Image  # 8-bit palette keeps the PNG small for the repository

    Image.open(args.out).convert("RGB").quantize(colors=128).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
