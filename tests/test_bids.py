"""Session discovery (dnqsm.bids): entities, bids_filters and what an ambiguous session says."""

from __future__ import annotations

import pytest

from dnqsm.bids import select_sessions


def _touch(root, *names):
    for name in names:
        sub, ses = name.split("_")[:2]
        path = root / sub / ses / "anat" / f"{name}_Chimap.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def qsmxt_like(tmp_path):
    """Two reconstructions per session, a second run in one, as QSM pipelines write them."""
    _touch(tmp_path, "sub-01_ses-1_acq-gre_rec-tkd", "sub-01_ses-1_acq-gre_rec-l2",
           "sub-01_ses-2_acq-gre_rec-tkd", "sub-01_ses-2_acq-gre_rec-l2", "sub-01_ses-2_acq-gre_rec-l2_run-2",
           "sub-02_ses-1_acq-gre_rec-tkd", "sub-02_ses-1_acq-gre_rec-l2")
    return tmp_path


def test_entities_are_read_and_filters_pick_one_image_per_session(qsmxt_like):
    picked = select_sessions(qsmxt_like, bids_filters={"rec": "l2", "run": None})
    assert [(s.subject, s.session, dict(s.entities)) for s in picked] == [
        ("01", "1", {"acq": "gre", "rec": "l2"}), ("01", "2", {"acq": "gre", "rec": "l2"}),
        ("02", "1", {"acq": "gre", "rec": "l2"})]
    assert [s.image.name for s in select_sessions(qsmxt_like, bids_filters={"rec": ["l2"], "run": 2})] == \
        ["sub-01_ses-2_acq-gre_rec-l2_run-2_Chimap.nii.gz"], "run-2 matches 2, and lists work"
    assert len(select_sessions(qsmxt_like, bids_filters={"rec": "tkd", "acq": True})) == 3


def test_several_images_per_session_say_which_entities_differ(qsmxt_like):
    with pytest.raises(ValueError, match=r"3 session\(s\) have several _Chimap images, e.g. sub-01_ses-1: .*"
                                         r"pick one per session with bids_filters .*entities here: acq, rec"):
        select_sessions(qsmxt_like)


def test_filters_that_match_nothing_list_what_is_there(qsmxt_like):
    with pytest.raises(ValueError, match=r"match none of the 7 _Chimap images .*acq-gre_rec-l2"):
        select_sessions(qsmxt_like, bids_filters={"rec": "ssvsf"})
