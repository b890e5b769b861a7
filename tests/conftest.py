"""Shared fixtures: small synthetic cohorts generated once per test run.

`make test` runs the suite on two pytest-xdist workers (one per core; each test module stays on one
worker). The cohorts below are then made once for the whole run, by whichever worker asks first, in a
folder every worker of this run shares; the others wait on a file lock and read the finished dataset
(write_dataset renames it into place only when it is complete). Tests treat them as read-only and
copy them before adding files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from filelock import FileLock

from dnqsm.synth import write_dataset


def shared_dataset(tmp_path_factory, worker_id: str, name: str, **synth_args) -> Path:
    """A synthetic dataset made once per test run, shared by all xdist workers of the run."""
    if worker_id == "master":  # not distributed: this process is the whole run
        root = tmp_path_factory.getbasetemp() / "shared"
    else:  # each worker's basetemp is <run>/popen-gwN; <run> is this run's alone
        root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(parents=True, exist_ok=True)
    out = root / name
    with FileLock(str(root / f"{name}.lock")):
        return write_dataset(out, overwrite=True, reuse=True, **synth_args)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory, worker_id):
    """8 participants (control, ataxia) x up to 3 visits at ~1 mm: the longitudinal test cohort."""
    return shared_dataset(tmp_path_factory, worker_id, "demo", preset="demo", subjects=8, sessions=3, seed=7, jobs=2)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory, worker_id):
    """2 participants x 2 visits at ~1 mm (seed 11), shared read-only by the workflow tests that need a
    few good sessions; a test that adds files copies it first."""
    return shared_dataset(tmp_path_factory, worker_id, "small", preset="demo", subjects=2, sessions=2, seed=11, jobs=2)


# Test modules by how long they take here (longest first), so that the two workers do not end the
# run with one long module left on one of them; modules not listed follow in their usual order.
LONGEST_FIRST = (
    "test_longitudinal_workflow",
    "test_cohort_workflow",
    "test_faults",
    "test_synth",
    "test_slurm",
    "test_train",
    "test_segment",
    "test_qsmxt_input",
    "test_atlas",
    "test_workflow",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))
