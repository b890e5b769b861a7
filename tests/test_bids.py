"""Session discovery (dnqsm.workflow.bids): entities, bids_filters and what an ambiguous session says."""

from __future__ import annotations

import pytest

from dnqsm.workflow.bids import select_sessions


def _touch(root, *names):
    for name in names:
        sub, ses = name.split("_")[:2]
        path = root / sub / ses / "anat" / f"{name}_Chimap.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture
def qsmxt_like(tmp_path):
    """Two reconstructions per session, a second run in one, as QSM pipelines write them."""
    _touch(
        tmp_path,
        "sub-01_ses-1_acq-gre_rec-tkd",
        "sub-01_ses-1_acq-gre_rec-l2",
        "sub-01_ses-2_acq-gre_rec-tkd",
        "sub-01_ses-2_acq-gre_rec-l2",
        "sub-01_ses-2_acq-gre_rec-l2_run-2",
        "sub-02_ses-1_acq-gre_rec-tkd",
        "sub-02_ses-1_acq-gre_rec-l2",
    )
    return tmp_path


def test_entities_are_read_and_filters_pick_one_image_per_session(qsmxt_like):
    picked = select_sessions(qsmxt_like, bids_filters={"rec": "l2", "run": None})
    assert [(s.subject, s.session, dict(s.entities)) for s in picked] == [
        ("01", "1", {"acq": "gre", "rec": "l2"}),
        ("01", "2", {"acq": "gre", "rec": "l2"}),
        ("02", "1", {"acq": "gre", "rec": "l2"}),
    ]
    assert [s.image.name for s in select_sessions(qsmxt_like, bids_filters={"rec": ["l2"], "run": 2})] == [
        "sub-01_ses-2_acq-gre_rec-l2_run-2_Chimap.nii.gz"
    ], "run-2 matches 2, and lists work"
    assert len(select_sessions(qsmxt_like, bids_filters={"rec": "tkd", "acq": True})) == 3


def test_several_images_of_a_session_are_entries_named_by_their_entities(qsmxt_like):
    every = select_sessions(qsmxt_like)
    assert [s.key for s in every][:3] == [
        "sub-01_ses-1_acq-gre_rec-l2",
        "sub-01_ses-1_acq-gre_rec-tkd",
        "sub-01_ses-2_acq-gre_rec-l2",
    ]
    assert len({s.key for s in every}) == 7 and every[0].image_entities == "acq-gre_rec-l2"


def test_images_only_desc_tells_apart_are_refused_naming_them(qsmxt_like):
    _touch(qsmxt_like, "sub-02_ses-1_acq-gre_rec-l2_desc-masked")
    with pytest.raises(
        ValueError,
        match=r"1 session\(s\) have several _Chimap images that only desc tell apart, "
        r"e.g. sub-02_ses-1_acq-gre_rec-l2: .*pick one per session with bids_filters",
    ):
        select_sessions(qsmxt_like)
    assert len(select_sessions(qsmxt_like, bids_filters={"desc": None})) == 7


def test_filters_that_match_nothing_list_what_is_there(qsmxt_like):
    with pytest.raises(ValueError, match=r"match none of the 7 _Chimap images .*acq-gre_rec-l2"):
        select_sessions(qsmxt_like, bids_filters={"rec": "ssvsf"})


@pytest.mark.parametrize(
    "name",
    [
        "sub-01_ses-2_acq-gre_rec-tkd_run-02_Chimap.nii.gz",
        "sub-A1_Chimap.nii",
        "sub-7_ses-base_desc-masked_Chimap.nii.gz",
        "sub-01_ses-1_echo-3_part-mag_chunk-2_inv-1_flip-2_mt-on_ce-gd_space-orig_Chimap.nii.gz",
        "sub-01_ses-1_foo-bar_Chimap.nii.gz",
    ],
)
def test_file_names_split_into_the_entities_pybids_reads(name, tmp_path):
    from bids.layout import parse_file_entities

    from dnqsm.workflow.bids import file_entities

    path = tmp_path / name
    by_pybids = parse_file_entities(str(path))
    keys = {
        "subject": "sub",
        "session": "ses",
        "acquisition": "acq",
        "reconstruction": "rec",
        "run": "run",
        "echo": "echo",
        "part": "part",
        "chunk": "chunk",
        "inv": "inv",
        "flip": "flip",
        "mt": "mt",
        "ceagent": "ce",
        "space": "space",
        "desc": "desc",
    }
    expected = {keys[k]: str(v) for k, v in by_pybids.items() if k in keys}
    assert file_entities(path) == expected


def test_a_file_naming_another_subject_than_its_folder_is_refused(qsmxt_like):
    _touch(qsmxt_like, "sub-03_ses-1_acq-gre_rec-l2")
    wrong = qsmxt_like / "sub-03" / "ses-1" / "anat" / "sub-04_ses-1_acq-gre_rec-l2_Chimap.nii.gz"
    (qsmxt_like / "sub-03" / "ses-1" / "anat" / "sub-03_ses-1_acq-gre_rec-l2_Chimap.nii.gz").rename(wrong)
    with pytest.raises(
        ValueError,
        match=r"sub-04_ses-1_acq-gre_rec-l2_Chimap.nii.gz: the file name says sub-04_ses-1 "
        r"but it lies in sub-03/ses-1",
    ):
        select_sessions(qsmxt_like)
