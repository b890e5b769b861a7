"""Render docs/randomized_montage.png: domain-randomized training images, three planes through the nuclei.

Usage: python docs/make_randomized_montage.py [--data results/train9/randomized] [--images 6]
       [--out docs/randomized_montage.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd

from dnqsm.io import bids_path
from dnqsm.names import dentate_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("results/train9/randomized"))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/randomized_montage.png"))
    args = parser.parse_args()
    drawn = pd.read_csv(args.data / "derivatives" / "manual" / "drawn.tsv", sep="\t").head(args.images)
    fig, axes = plt.subplots(len(drawn), 3, figsize=(9, 3 * len(drawn)))
    for row, (_, record) in zip(np.atleast_2d(axes), drawn.iterrows()):
        label = record.participant_id.removeprefix("sub-")
        image = nib.load(bids_path(args.data, label, None, "Chimap"))
        dseg = np.asarray(nib.load(dentate_labels(args.data / "derivatives" / "manual", label, None)).dataobj)
        values = image.get_fdata(dtype=np.float32)
        zooms = image.header.get_zooms()[:3]
        centre = np.argwhere(dseg > 0).mean(0).round().astype(int)
        planes = [
            (values[:, :, centre[2]], dseg[:, :, centre[2]], zooms[1] / zooms[0]),
            (values[:, centre[1], :], dseg[:, centre[1], :], zooms[2] / zooms[0]),
            (values[centre[0]], dseg[centre[0]], zooms[2] / zooms[1]),
        ]
        for ax, (plane, labels, aspect) in zip(row, planes):
            ax.imshow(plane.T, cmap="gray", origin="lower", vmin=-0.1, vmax=0.25, aspect=aspect)
            ax.contour((labels > 0).T, [0.5], colors="#ff4d4d", linewidths=0.6)
            ax.set_axis_off()
        row[0].set_title(
            f"{record.anatomy.removesuffix('.nii.gz')}, {record.layout}, pitch {record.pitch_deg:.0f}°, "
            f"DN +{record.dn_contrast_ppm:.2f} ppm",
            fontsize=8,
            loc="left",
        )
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
