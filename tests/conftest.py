"""Shared fixtures: small synthetic cohorts generated once per test session."""

from __future__ import annotations

import pytest

from dnqsm.synth import write_dataset


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory):
    """8 participants (control, ataxia) x up to 3 visits at ~1 mm: the longitudinal test cohort."""
    out = tmp_path_factory.mktemp("synth") / "demo"
    return write_dataset(out, "demo", subjects=8, sessions=3, seed=7, jobs=2)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """2 participants x 2 visits at ~1 mm (seed 11), shared read-only by the workflow tests that need a
    few good sessions; a test that adds files copies it first."""
    out = tmp_path_factory.mktemp("synth") / "small"
    return write_dataset(out, "demo", subjects=2, sessions=2, seed=11, jobs=2)
