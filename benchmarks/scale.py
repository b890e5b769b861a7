"""Planning cost of big cohorts: dry-run time and memory, job counts, what each cluster job pays to parse.

Usage: python benchmarks/scale.py [--sessions 1000 5000 50000] [--batch-size 6] [--keep DIR]

Each cohort is N sessions (N/2 participants x 2 visits) whose _Chimap images and sidecars are hard
links to one small image, so only planning is measured. Per cohort, each step in a fresh process:
- `snakemake -n` as a user starts a run (main process: discovery, stable batch plan, DAG): wall
  time, peak RSS (the process and its children), Snakemake's job count;
- the parse a cluster job pays before its work: `snakemake --mode remote -l` (the mode SLURM jobs
  run in: the session list comes from the main process's manifest, work_dir/batches.tsv; median of
  three), next to the same parse in the main process's mode (which discovers the cohort), and to what
  Snakemake alone pays for it (the same command on a one-rule Snakefile: its imports and plugins);
- SLURM submissions with profiles/slurm: the light batch rules (preprocess, measure) are submitted in
  group jobs of `group-components` batches each, every other job alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from dnqsm.settings import defaults
from dnqsm.workflow.command import snakemake_command

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_workflow import jobs_by_rule  # noqa: E402  (one parser of Snakemake's job table)

MEASURE = r"""
import resource, subprocess, sys, time
start = time.perf_counter()
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 0) / 2**20
sys.stdout.write(f"{seconds:.3f} {peak:.3f} {run.returncode}\n" + run.stdout + run.stderr)
"""


def make_cohort(root: Path, sessions: int) -> Path:
    """N sessions of hard links to one small image (planning never reads the voxels)."""
    bids = root / "bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "scale", "BIDSVersion": "1.9.0"}))
    image, sidecar = root / "one_Chimap.nii.gz", root / "one_Chimap.json"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), image)
    sidecar.write_text(json.dumps({"Units": "ppm"}))
    rows = ["participant_id\tgroup\tsex\tage"]
    for i in range(math.ceil(sessions / 2)):
        sub = f"{i + 1:05d}"
        rows.append(f"sub-{sub}\tcontrol\tF\t50")
        for visit in ("01", "02")[: min(2, sessions - 2 * i)]:
            anat = bids / f"sub-{sub}" / f"ses-{visit}" / "anat"
            anat.mkdir(parents=True)
            os.link(image, anat / f"sub-{sub}_ses-{visit}_Chimap.nii.gz")
            os.link(sidecar, anat / f"sub-{sub}_ses-{visit}_Chimap.json")
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    return bids


def measured(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS GiB, output) of a command in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, cwd=cwd).stdout
    head, _, text = out.partition("\n")
    seconds, peak, code = head.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return float(seconds), float(peak), text


def median_seconds(cmd: list[str], cwd: Path, runs: int = 3) -> tuple[float, float]:
    """(median wall s, peak RSS GiB) over ``runs`` fresh processes: single parses vary by 0.2 s here."""
    results = [measured(cmd, cwd)[:2] for _ in range(runs)]
    return float(np.median([r[0] for r in results])), max(r[1] for r in results)


def snakemake_alone(tmp: Path) -> float:
    """What Snakemake itself pays to parse in a cluster job: ``--mode remote -l`` of a one-rule Snakefile."""
    folder = tmp / "one-rule"
    folder.mkdir()
    (folder / "Snakefile").write_text('rule all:\n    output: "done"\n    shell: "touch {output}"\n')
    return median_seconds([sys.executable, "-m", "snakemake", "--cores", "1", "--mode", "remote", "-l"], folder)[0]


def slurm_submissions(jobs: dict[str, int]) -> int:
    """Jobs profiles/slurm submits: a grouped rule's jobs in groups of group-components, others alone."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    per_group = dict(item.split("=") for item in profile.get("group-components", []))
    rule_group = {}
    for smk in (REPO / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text(), re.S | re.M):
            found = re.search(r'group:\s*\n\s*"(\w+)"', body)
            if found:
                rule_group[rule] = found.group(1)
    alone = sum(n for rule, n in jobs.items() if rule not in rule_group and rule != "all")
    groups = {rule_group[r] for r in jobs if r in rule_group}
    per_rule = {g: max(n for r, n in jobs.items() if rule_group.get(r) == g) for g in groups}
    return alone + sum(math.ceil(per_rule[g] / int(per_group.get(g, 1))) for g in groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1000, 5000, 50000])
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--keep", type=Path, help="make the cohorts here and keep them")
    args = parser.parse_args()
    config = defaults()
    rows = []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    for n in args.sessions:
        root = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.keep))
        start = time.perf_counter()
        bids = make_cohort(root, n)
        made = time.perf_counter() - start
        config.update(bids_dir=str(bids), output_dir=str(root / "out"), work_dir=str(root / "work"))
        config["inference"]["batch_size"] = args.batch_size
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        base = snakemake_command(root)
        dry_s, dry_gib, text = measured(base + ["-n"], root)
        jobs = jobs_by_rule(text)
        job_parse_s, job_gib = median_seconds(base + ["--mode", "remote", "-l"], root)
        main_parse_s, _, _ = measured(base + ["-l"], root)
        rows.append(
            {
                "sessions": n,
                "jobs": sum(jobs.values()),
                "dry_s": dry_s,
                "dry_gib": dry_gib,
                "job_parse_s": job_parse_s,
                "job_gib": job_gib,
                "main_parse_s": main_parse_s,
                "slurm": slurm_submissions(jobs),
                "made_s": made,
            }
        )
        print(f"{n} sessions: {rows[-1]}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(root)
    with tempfile.TemporaryDirectory() as tmp:
        alone_s = snakemake_alone(Path(tmp))
    print(
        f"\nbatch_size {args.batch_size}, {os.cpu_count()} CPUs; Snakemake alone (a one-rule Snakefile, "
        f"`--mode remote -l`): {alone_s:.1f} s\n"
    )
    print(
        "| sessions | Snakemake jobs | `snakemake -n` s | peak RSS GiB | parse per cluster job s (manifest) "
        "| same parse with discovery s | SLURM submissions (profiles/slurm) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['sessions']:,} | {r['jobs']:,} | {r['dry_s']:.1f} | {r['dry_gib']:.2f} | {r['job_parse_s']:.1f} "
            f"| {r['main_parse_s']:.1f} | {r['slurm']:,} |"
        )


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("scale", "Planning cost of big cohorts", main, __doc__)
