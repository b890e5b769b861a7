"""The SLURM profile on a real single-node SLURM (Debian slurm-wlm, munge, a count-only fake GPU).

Enable outside CI with `sudo bash tests/slurm/setup_single_node.sh`; .ci/run does it and sets
DNQSM_REQUIRE_SLURM=1 (and CI=true does the same), so in CI a missing cluster fails instead of skipping.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from config_helpers import default_config
from test_workflow import REPO, snakemake

# The only test-specific settings: how often the plugin polls (the test cluster has no accounting
# database, so status comes from squeue), so that a small workflow does not wait minutes.
STATUS_CHECKS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "2",
]


def slurm_or_skip():
    ready = shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ready:
        message = "no SLURM cluster: run `sudo bash tests/slurm/setup_single_node.sh` to enable the SLURM tests"
        if os.environ.get("DNQSM_REQUIRE_SLURM") == "1" or os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def config_for(tmp: Path, bids: Path) -> dict:
    config = default_config()
    config.update(bids_dir=str(bids), output_dir=str(tmp / "out"), work_dir=str(tmp / "work"))
    config["inference"]["batch_size"] = 2
    return config


def cancel_first_running_segment_job(found: dict, stop: threading.Event) -> None:
    """Watch squeue; scancel the first segmentation job a few seconds after it starts running."""
    while not stop.is_set():
        out = subprocess.run(["squeue", "-h", "-o", "%i %k %t"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            job, comment, state = (line.split() + ["", "", ""])[:3]
            if comment.startswith("rule_segment") and state == "R":
                time.sleep(3)
                subprocess.run(["scancel", job])
                found["cancelled"] = job
                return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_cohort):
    slurm_or_skip()
    root = tmp_path_factory.mktemp("slurm")
    bids = small_cohort
    local, cluster = root / "local", root / "cluster"
    local.mkdir()
    cluster.mkdir()
    local_run = snakemake(local, config_for(local, bids), "--profile", str(REPO / "profiles" / "local"))
    assert local_run.returncode == 0, local_run.stdout[-3000:] + local_run.stderr[-3000:]
    found: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=cancel_first_running_segment_job, args=(found, stop), daemon=True)
    watcher.start()
    cluster_run = snakemake(
        cluster, config_for(cluster, bids), "--profile", str(REPO / "profiles" / "slurm"), *STATUS_CHECKS
    )
    stop.set()
    return local, cluster, local_run, cluster_run, found


def outputs(root: Path) -> list[Path]:
    """Every output dataset file except qc.html, which embeds its own location (its ratings key)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and ".snakemake_timestamp" not in p.name and p.name != "qc.html"
    )


def test_slurm_run_completes_after_a_cancelled_job_and_matches_the_local_run_byte_for_byte(runs):
    local, cluster, _, cluster_run, found = runs
    log = cluster_run.stdout + cluster_run.stderr
    assert cluster_run.returncode == 0, log[-4000:]
    assert "cancelled" in found, "the watcher saw a running segmentation job and cancelled it"
    assert re.search(r"Trying to restart job", log), "the cancelled job was retried"
    files = outputs(local / "out")
    assert files == outputs(cluster / "out")
    assert any(f.name.endswith("_desc-dentate_dseg.nii.gz") for f in files)
    assert {"cohort/desc-dentate_measures.tsv", "stats/fixed_effects.tsv"} <= {str(f) for f in files}
    match, mismatch, errors = filecmp.cmpfiles(local / "out", cluster / "out", [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == [], (mismatch, errors)


def test_gpu_rules_asked_slurm_for_a_gpu_and_saw_one(runs):
    _, cluster, _, cluster_run, _ = runs
    log = cluster_run.stdout + cluster_run.stderr
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(\w+?)/", log)
    assert submitted, log[-3000:]
    for job, kind in submitted:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        asks_gpu = "gres:gpu:1" in shown or "gres/gpu=1" in shown
        assert asks_gpu == (kind == "rule_segment"), (job, kind, shown)
    segment_log = (cluster / "work" / "logs" / "segment" / "nnunet" / "batch-001.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in segment_log
    # light batch jobs went to SLURM grouped (two batches each), not one job per rule and batch
    kinds = [kind for _, kind in submitted]
    assert kinds.count("group_preprocess_preprocess") == 1 and kinds.count("group_measure_measure") == 1, kinds


def test_after_the_slurm_run_nothing_is_outdated(runs):
    _, cluster, _, _, _ = runs
    config = yaml.safe_load((cluster / "config.yaml").read_text())  # the configuration of the SLURM run
    dry = snakemake(cluster, config, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    summary = snakemake(cluster, config, "--summary")
    rows = [line.split("\t") for line in summary.stdout.splitlines()[1:] if "\t" in line]
    assert rows and all(row[4] == "ok" and row[5] == "no update" for row in rows), summary.stdout[-2000:]
