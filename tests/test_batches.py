"""Stable segmentation batches (dnqsm.workflow.batches): adding sessions never moves an existing one."""

from __future__ import annotations

from pathlib import Path

from dnqsm.workflow.batches import plan_batches
from dnqsm.workflow.bids import Session


def _sessions(*keys: str) -> list[Session]:
    return [Session(k.split("/")[0], k.split("/")[1], Path(f"{k}.nii.gz")) for k in keys]


def _members(batches) -> dict[str, list[str]]:
    return {b: [f"{s.subject}/{s.session}" for s in members] for b, members in batches.items()}


def test_new_sessions_go_to_new_batches_and_old_ones_stay(tmp_path):
    manifest = tmp_path / "batches.tsv"
    first = _members(plan_batches(_sessions("001/01", "001/02", "002/01", "003/01", "004/01"), manifest, 2))
    assert first == {"001": ["001/01", "001/02"], "002": ["002/01", "003/01"], "003": ["004/01"]}
    written = manifest.stat().st_mtime_ns
    assert _members(plan_batches(_sessions("001/01", "001/02", "002/01", "003/01", "004/01"), manifest, 2)) == first
    assert manifest.stat().st_mtime_ns == written, "an unchanged plan is not rewritten"
    # a visit early in the sort order: every earlier batch keeps its members
    grown = _members(
        plan_batches(_sessions("000/01", "001/01", "001/02", "001/03", "002/01", "003/01", "004/01"), manifest, 2)
    )
    assert {b: m for b, m in grown.items() if b in first} == first
    assert grown["004"] == ["000/01", "001/03"]
    # a session that leaves changes only its own batch
    shrunk = _members(plan_batches(_sessions("000/01", "001/01", "001/02", "001/03", "003/01", "004/01"), manifest, 2))
    assert shrunk["002"] == ["003/01"] and shrunk["001"] == first["001"]


def test_a_new_batch_size_plans_afresh(tmp_path):
    manifest = tmp_path / "batches.tsv"
    sessions = _sessions("001/01", "002/01", "003/01")
    plan_batches(sessions, manifest, 1)
    assert _members(plan_batches(sessions, manifest, 3)) == {"001": ["001/01", "002/01", "003/01"]}
    assert "\t001\t3\t" in manifest.read_text()


def test_the_plan_lists_the_sessions_for_jobs_that_must_not_rediscover(tmp_path):
    from dnqsm.workflow.batches import read_plan

    manifest = tmp_path / "batches.tsv"
    assert read_plan(manifest) == {}, "no plan yet: discover"
    sessions = _sessions("1/10", "1/2", "10/1", "2/1")  # in the discovery's order
    planned = plan_batches(sessions, manifest, 3)
    read = read_plan(manifest)
    assert read == planned, "same sessions, images, batches and order as the main process planned"
    assert read.batch_of == planned.batch_of == {s.key: b for b, members in planned.items() for s in members}
    assert read.sessions == planned.sessions == sessions and read.has_sessions and planned.has_sessions
    assert read.by_subject == planned.by_subject and [s.session for s in read.by_subject["1"]] == ["10", "2"]
    manifest.write_text("session_key\tbatch\tbatch_size\nsub-1_ses-10\t001\t3\n")  # written by an older version
    assert read_plan(manifest) == {}


def test_a_manifest_with_quoted_fields_and_entities_reads_back(tmp_path):
    from dnqsm.workflow.batches import read_plan

    manifest = tmp_path / "batches.tsv"
    sessions = [
        Session("1", None, Path('/data/my "study"/sub-1_rec-tkd_Chimap.nii.gz'), (("rec", "tkd"),)),
        Session("2", None, Path("/data/plain/sub-2_acq-gre_run-2_Chimap.nii.gz"), (("acq", "gre"), ("run", "2"))),
    ]
    planned = plan_batches(sessions, manifest, 1)
    assert '"' in manifest.read_text(), "pandas quoted the path"
    assert read_plan(manifest) == planned and read_plan(manifest).sessions == sessions
    plan_batches(sessions[1:], manifest, 1)  # without a quoted field: the text split
    read = read_plan(manifest)
    assert read.sessions == sessions[1:] and not read.has_sessions and read.batch_of == {"sub-2_acq-gre_run-2": "002"}
