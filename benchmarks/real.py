"""The engine on real QSM maps: a montage per image to look at, and one table row per image.

Usage: python benchmarks/real.py [FOLDER ...] [--out results/real] [--models DIR] [--no-mirroring]
FOLDER: any folder of ``*_Chimap.nii.gz`` (default ``../shared/data/real-qsm``, the development map).
Each map is preprocessed as the workflow does (unit settled, values to ppb), segmented with the given
models (default: the bundled ones), and drawn as the workflow's QC snapshot (both nuclei in three
world-aligned planes with their outlines, the localization box dashed) into ``OUT/<stem>.png``. The
table (status, reasons, which locator placed the crop, volumes, left/right ratio, mean chi, seconds)
is printed and written to ``OUT/real.md``. Real maps have no truth here: look at every montage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from dnqsm.labels import SIDES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "real-qsm"
COLUMNS = ("image", "status", "locator", "left mm³", "right mm³", "L/R", "left ppb", "right ppb", "s", "reasons")


def real_maps(folders: list[Path]) -> list[Path]:
    """Every ``*_Chimap.nii.gz`` in the folders, sorted; a clear error where there is none."""
    maps = sorted(p for folder in folders for p in Path(folder).glob("*_Chimap.nii*"))
    if not maps:
        raise SystemExit(f"no *_Chimap.nii[.gz] in {', '.join(str(f) for f in folders)}")
    return maps


def row(meta: dict, chi_means: dict[str, float | None]) -> dict:
    """One table row from an image's engine metadata."""
    sides = meta.get("dentate") or {}
    left, right = (sides.get(s, {}).get("volume_mm3") for s in ("left", "right"))
    ratio = left / right if left and right else None
    reasons = meta.get("review_reasons") or ([meta["error"]] if meta.get("error") else [])
    return {
        "image": meta["stem"],
        "status": meta["status"],
        "locator": (meta.get("localization") or {}).get("locator", "n/a"),
        "left mm³": left,
        "right mm³": right,
        "L/R": ratio,
        "left ppb": chi_means.get("left"),
        "right ppb": chi_means.get("right"),
        "s": meta.get("timings_s", {}).get("total"),
        "reasons": "; ".join(reasons),
    }


def markdown(rows: list[dict]) -> str:
    def cell(value):
        if value is None:
            return "n/a"
        return (
            f"{value:.2f}"
            if isinstance(value, float) and abs(value) < 10
            else (f"{value:.0f}" if isinstance(value, float) else str(value))
        )

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run(folders: list[Path], out: Path, models: str | None = None, mirroring: bool = True) -> list[dict]:
    """Segment and draw every real map; returns the table rows."""
    import nibabel as nib
    import numpy as np

    from dnqsm.engine.segment import NnunetMethod, load_model_set
    from dnqsm.io import save_nifti
    from dnqsm.names import result_path
    from dnqsm.qc.snapshots import render_snapshot
    from dnqsm.workflow.preprocess import preprocess

    out.mkdir(parents=True, exist_ok=True)
    segmenter = NnunetMethod(load_model_set(models), device="cpu", threads=2, mirroring=mirroring)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dnqsm-real-") as scratch:
        for path in real_maps(folders):
            chi, record = preprocess(path)  # ppb, as the workflow's segment step sees it
            ppb = Path(scratch) / path.name
            save_nifti(ppb, chi)
            meta = segmenter.run([ppb], out / "engine")[0]
            seg_path = result_path(out / "engine", meta["stem"], "labels")
            means: dict[str, float | None] = {}
            if meta["status"] != "failed":
                labels = np.asarray(nib.load(seg_path).dataobj)
                values = chi.get_fdata(dtype=np.float32)
                means = {
                    side: float(values[labels == value].mean()) if (labels == value).any() else None
                    for side, value in SIDES.items()
                }
                title = f"{meta['stem']}: {meta['status']}, crop placed by {meta['localization']['locator']}"
                render_snapshot(
                    out / f"{meta['stem']}.png",
                    chi,
                    nib.load(seg_path),
                    title,
                    meta["box"],
                    [f"input unit {record['input_unit']}"],
                    meta["review_reasons"],
                )
            rows.append(row(meta, means))
    (out / "real.md").write_text(markdown(rows))
    return rows


def add_engine_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """``--out``, ``--models`` and ``--mirroring``, as every real-map benchmark takes them."""
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--models", default=None, help="model folder (default: the bundled demo models)")
    parser.add_argument(
        "--mirroring",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test-time mirroring (the default, as in `dnqsm segment`)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, default=[DEFAULT_FOLDER])
    add_engine_arguments(parser, REPO / "results" / "real")
    args = parser.parse_args(argv)
    rows = run(args.folders, args.out, args.models, args.mirroring)
    sys.stdout.write(markdown(rows))
    print(f"montages: {args.out}/<image>.png (look at every one)")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("real", "Real QSM maps", main, __doc__)
