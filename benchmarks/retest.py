"""Test-retest error of the DN measures: what a trial's sample size depends on.

Usage: python benchmarks/retest.py [--subjects 12] [--sessions 2] [--methods nnunet longitudinal atlas]
                                   [--out scans.tsv | --table scans.tsv] [--keep DIR [--reuse]]
                                   [--prior-weight W] [--no-mirroring]
Generates a fresh `retest` cohort (seed 4001: every yearly visit scanned twice the same day, same
nucleus, new pose, grid, noise and reconstruction, a quarter of the rescans on another site's
protocol), segments every scan with each method (the bundled nnU-Net models; the atlas baseline with
three labelled `train` subjects as atlases; `longitudinal`: the nnU-Net results of each subject's
scans combined through the longitudinal mode, `dnqsm.engine.longitudinal`), measures each side
(`dnqsm.analysis.measure`, on the image converted to ppb as the workflow does) and, per measure and side,
over the same-day pairs:
- within-subject coefficient of variation: sqrt(mean of d^2 / 2) / grand mean, d = scan - rescan;
- ICC(A,1) of scan against rescan (`dnqsm.analysis.metrics.volume_agreement`, pingouin);
- smallest detectable change: 1.96 x sqrt(2) x SEM, SEM = sqrt(mean of d^2 / 2), also in % of the mean;
- participants per arm for a trial that slows the ataxia group's planted excess change (volume -2.7 %
  and mean chi +3.5 ppb a year beyond the controls', `dnqsm.synth.cohort.DEFAULT_EFFECTS`) by 30 %, with
  visits at 0, 1 and 2 years, when the per-subject slopes vary by this measurement error alone
  (slope SD = SEM / sqrt(sum (t - mean t)^2)); two-sided alpha 0.05, power 0.8 (`dnqsm.analysis.stats`,
  statsmodels). True between-subject variation of progression adds to it in a real trial, so these are
  lower bounds that compare the modes, not a trial's size.
Prints one Markdown table, then per method the mean volume error against the truth labels on the scans'
own grids and the truth labels' own same-day CV on the pairs the checks accept: the planted nucleus is
the same in both scans, so that CV is only its counting on two grids, the floor of any voxel count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from segment_accuracy import add_mirroring_argument

from dnqsm.analysis.measure import measure
from dnqsm.analysis.metrics import volume_agreement
from dnqsm.analysis.stats import participants_per_arm
from dnqsm.io import bids_path, read_tsv, write_tsv
from dnqsm.names import result_path
from dnqsm.synth import write_dataset
from dnqsm.synth.cohort import DEFAULT_EFFECTS
from dnqsm.workflow.preprocess import preprocess

TRIAL_YEARS = (0.0, 1.0, 2.0)
SLOWING = 0.3
_ATAXIA, _CONTROL = DEFAULT_EFFECTS["ataxia"], DEFAULT_EFFECTS["control"]
#: planted excess change a year of the ataxia group: (% of the mean, or absolute) per measure
EXCESS = {
    "volume_mm3": ("%", _ATAXIA.volume_pct_per_year - _CONTROL.volume_pct_per_year),
    "chi_mean_ppb": ("ppb", _ATAXIA.chi_ppb_per_year - _CONTROL.chi_ppb_per_year),
}
MEASURES = {"volume_mm3": "volume (mm³)", "chi_mean_ppb": "mean χ (ppb)", "chi_mass_ppb_mm3": "χ mass (ppb·mm³)"}


def engines(methods: list[str], tmp: Path, mirroring: bool = True) -> dict:
    out = {}
    if "nnunet" in methods or "longitudinal" in methods:
        from dnqsm.engine.segment import NnunetMethod, load_model_set

        out["nnunet"] = NnunetMethod(load_model_set(), device="cpu", threads=2, mirroring=mirroring)
    if "atlas" in methods:
        from dnqsm.engine.atlas import AtlasMethod, atlas_pairs, load_atlases

        atlases = write_dataset(tmp / "atlases", "train", subjects=3, sessions=1, seed=1, jobs=2)
        out["atlas"] = AtlasMethod(load_atlases(atlas_pairs(atlases, atlases / "derivatives" / "manual")), threads=2)
    return out


def check_kept(truth: pd.DataFrame, args: argparse.Namespace) -> None:
    """A kept cohort must be the one these arguments would generate (subjects, yearly visits)."""
    kept = (truth.participant_id.nunique(), int(truth.visit.max()))
    if kept != (args.subjects, args.sessions):
        raise SystemExit(
            f"{args.keep}: the kept cohort has {kept[0]} subjects x {kept[1]} visits, not "
            f"--subjects {args.subjects} --sessions {args.sessions}; rerun without --reuse"
        )


def check_models(records: list[dict], folder: Path, mirroring: bool) -> None:
    """Kept network results must come from the models this run would load (compared by sha256) and
    the same test-time mirroring."""
    from dnqsm.engine.nnunet import BUNDLED_MODELS, sha256

    wanted = {role: sha256(BUNDLED_MODELS / f"{role}.zip") for role in ("localization", "segmentation")}
    for record in records:
        used = {role: record.get("models", {}).get(role, {}).get("sha256") for role in wanted}
        if used != wanted:
            raise SystemExit(
                f"{folder / record['stem']}: segmented with other models ({used}) than the current "
                f"ones ({wanted}); rerun without --reuse"
            )
        if record.get("options", {}).get("mirroring") != mirroring:
            raise SystemExit(
                f"{folder / record['stem']}: segmented with mirroring "
                f"{record.get('options', {}).get('mirroring')}, this run asks for {mirroring}; "
                "rerun without --reuse or with the same --mirroring/--no-mirroring"
            )


def scans(args: argparse.Namespace) -> pd.DataFrame:
    """One row per scan, method and side: the measures."""
    rows = []
    with contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.reuse:  # the cohort and the engines' results of an earlier --keep run into this folder
            root = tmp / "retest"
        else:
            root = write_dataset(
                tmp / "retest", "retest", subjects=args.subjects, sessions=args.sessions, seed=4001, jobs=2
            )
        truth = read_tsv(root / "derivatives" / "manual" / "truth.tsv")
        images = [bids_path(root, r.participant_id[4:], r.session_id[4:], "Chimap") for r in truth.itertuples()]
        results = {}
        if args.reuse:
            check_kept(truth, args)
            stems = [image.name.split(".")[0] for image in images]
            for method in ("nnunet", "atlas"):
                if method in args.methods or (method == "nnunet" and "longitudinal" in args.methods):
                    results[method] = (
                        [json.loads(result_path(tmp / method, s, "metadata").read_text()) for s in stems],
                        tmp / method,
                    )
            if "nnunet" in results:
                check_models(results["nnunet"][0], tmp / "nnunet", args.mirroring)
        else:
            for method, engine in engines(args.methods, tmp, args.mirroring).items():
                results[method] = (engine.run(images, tmp / method), tmp / method)
        if "longitudinal" in args.methods:  # every scan of a subject (visits and rescans alike) in one template
            from dnqsm.engine.longitudinal import longitudinal_subject

            records, folders = [None] * len(images), {}
            settings = {} if args.prior_weight is None else {"prior_weight": args.prior_weight}
            nnunet_records, nnunet_dir = results["nnunet"]
            for subject in truth.participant_id.unique():
                index = [i for i, r in enumerate(truth.itertuples()) if r.participant_id == subject]
                folders[subject] = tmp / "longitudinal" / subject
                years = [float(truth.visit.iloc[i]) - 1.0 for i in index]  # yearly visits; rescans share the day
                metas = longitudinal_subject(
                    [(nnunet_dir, nnunet_records[i]["stem"]) for i in index],
                    folders[subject],
                    settings=settings,
                    years=years,
                )
                for i, meta in zip(index, metas):
                    records[i] = {**meta, "folder": folders[subject]}
            results["longitudinal"] = (records, None)
        for method in [m for m in ("nnunet", "longitudinal", "atlas") if m in results]:
            records, folder = results[method]
            for r, image, record in zip(truth.itertuples(), images, records):
                row = {
                    "method": method,
                    "participant_id": r.participant_id,
                    "visit": r.visit,
                    "rescan": r.rescan,
                    "site": r.site,
                    "status": record["status"],
                    # the truth labels' volume on this scan's grid, as the generator counted it
                    "left_truth_volume_mm3": r.dn_left_volume_mm3,
                    "right_truth_volume_mm3": r.dn_right_volume_mm3,
                }
                if record["status"] != "failed":
                    chi, _ = preprocess(image, "auto")
                    labels = nib.load(result_path(record.get("folder") or folder, record["stem"], "labels"))
                    row.update(measure(chi, labels))
                rows.append(row)
    return pd.DataFrame(rows)


def pair_sets(table: pd.DataFrame):
    """((method, subset), same-day pairs): every pair with labels, and the pairs where both scans are ok
    (what a study keeps when it sets sessions under review aside)."""
    for method, t in table.groupby("method", sort=False):
        pairs = t[~t.rescan].merge(t[t.rescan], on=["participant_id", "visit"], suffixes=("_a", "_b"))
        pairs = pairs[(pairs.status_a != "failed") & (pairs.status_b != "failed")]
        yield (method, "all"), pairs
        yield (method, "both ok"), pairs[(pairs.status_a == "ok") & (pairs.status_b == "ok")]


def trial_size(key: str, sem: float, mean: float) -> str:
    """Participants per arm to see a 30 % slowing of the planted excess change when slopes vary by the
    measurement error ``sem`` alone (see the module's docstring); n/a for a measure without a planted rate."""
    if key not in EXCESS or not sem:
        return "n/a"
    unit, excess = EXCESS[key]
    delta = SLOWING * abs(excess) * (mean / 100 if unit == "%" else 1.0)
    t = np.asarray(TRIAL_YEARS)
    slope_sd = sem / float(np.sqrt(np.sum((t - t.mean()) ** 2)))
    n = participants_per_arm(delta / slope_sd, 0.05, 0.8)
    return "n/a" if not np.isfinite(n) else str(int(n))


def pair_error(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """SEM = sqrt(mean of d^2 / 2) over same-day pairs (d = scan - rescan), and their grand mean."""
    a, b = a.astype(float), b.astype(float)
    return float(np.sqrt(np.mean((a - b) ** 2) / 2)), float(np.mean(np.r_[a, b]))


def within_cv(a: pd.Series, b: pd.Series) -> float:
    """Within-subject coefficient of variation of same-day pairs, %."""
    sem, mean = pair_error(a, b)
    return 100 * sem / mean


def summary(table: pd.DataFrame) -> list[str]:
    out = [
        "| method | pairs | measure | side | n | within-subject CV % | ICC(A,1) "
        "| smallest detectable change (% of mean) "
        "| per arm, 30 % slowing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (method, subset), pairs in pair_sets(table):
        for key, name in MEASURES.items():
            for side in ("left", "right"):
                a, b = pairs[f"{side}_{key}_a"].astype(float), pairs[f"{side}_{key}_b"].astype(float)
                kept = a.notna() & b.notna()  # a side found in one scan only has no mean chi in the other
                a, b = a[kept], b[kept]
                sem, mean = pair_error(a, b)
                if len(a) < 3:
                    out.append(f"| {method} | {subset} | {name} | {side} | {len(a)} | n/a | n/a | n/a | n/a |")
                    continue
                icc = volume_agreement(a.to_numpy(), b.to_numpy())["icc_a1"]  # ICC(A,1) via pingouin
                sdc = 1.96 * np.sqrt(2) * sem
                out.append(
                    f"| {method} | {subset} | {name} | {side} | {len(a)} | {100 * sem / mean:.1f} | "
                    f"{icc:.3f} | {sdc:.3g} ({100 * sdc / mean:.1f} %) | {trial_size(key, sem, mean)} |"
                )
    return out


def truth_error(table: pd.DataFrame) -> list[str]:
    """Per method: the mean signed volume error against the truth labels on each scan's grid, % (every
    scan with labels), and the truth labels' own same-day volume CV on the pairs the checks accept
    (the same nucleus counted on two grids: the floor of the method's CV on those pairs); empty for
    a table written before the truth volumes were kept."""
    if "left_truth_volume_mm3" not in table:
        return []
    out = [
        "| method | scans | volume error against the truth labels, left / right % "
        "| accepted pairs | truth labels' own volume CV on them, left / right % |",
        "| --- | --- | --- | --- | --- |",
    ]
    accepted = {method: pairs for (method, subset), pairs in pair_sets(table) if subset == "both ok"}
    for method, t in table[table.status != "failed"].groupby("method", sort=False):
        errors = [
            100 * np.mean(t[f"{side}_volume_mm3"].astype(float) / t[f"{side}_truth_volume_mm3"] - 1)
            for side in ("left", "right")
        ]
        pairs = accepted[method]
        floor = [
            within_cv(pairs[f"{side}_truth_volume_mm3_a"], pairs[f"{side}_truth_volume_mm3_b"])
            for side in ("left", "right")
        ]
        out.append(
            f"| {method} | {len(t)} | {errors[0]:+.1f} / {errors[1]:+.1f} | {len(pairs)} "
            f"| {floor[0]:.1f} / {floor[1]:.1f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=2, help="yearly visits, each scanned twice")
    parser.add_argument(
        "--methods", nargs="+", default=["nnunet", "longitudinal", "atlas"], choices=["nnunet", "longitudinal", "atlas"]
    )
    parser.add_argument("--out", default=None, help="also write the per-scan table here (TSV)")
    parser.add_argument(
        "--keep",
        default=None,
        help="write the cohort and the results into this folder and keep them (a new folder, or an earlier "
        "run's with --reuse)",
    )
    parser.add_argument("--table", default=None, help="summarise a per-scan table written by --out instead")
    parser.add_argument(
        "--prior-weight",
        type=float,
        default=None,
        help="the longitudinal mode's longitudinal.prior_weight (default: the config's default)",
    )
    add_mirroring_argument(parser)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: reuse the cohort and the nnunet/atlas results an earlier --keep run left "
        "there (same --subjects and --sessions) and run only the longitudinal mode again",
    )
    args = parser.parse_args()
    if args.reuse and not (args.keep and (Path(args.keep) / "retest").is_dir()):
        parser.error(f"--reuse needs --keep naming the folder of an earlier run (no retest/ cohort in {args.keep})")
    table = pd.read_csv(args.table, sep="\t") if args.table else scans(args)
    if args.out:
        write_tsv(args.out, table)  # atomic; makes the folder
    print("\n".join(summary(table)))
    print("\n".join(["", *truth_error(table)]))


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("retest", "Test-retest error", main, __doc__)
