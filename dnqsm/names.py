"""The naming authority: the name of every file dnqsm writes (and of the labelled files it reads), by
role, in one place. The rules (``rules/common.smk``), the scripts, the library and the benchmarks ask
here; no other code spells a derivative, result-folder, log or benchmark-record name (a test greps).

BIDS names themselves are put together by :func:`dnqsm.io.bids_name`; this module says which ones.
"""

from __future__ import annotations

from pathlib import Path

from dnqsm.io import bids_name, bids_path

#: The ``desc`` entity of the dentate labels and measures dnqsm writes, and of the manual labels it reads.
DENTATE = "dentate"
#: How a dentate label image is called after its entities (``desc-dentate_dseg``).
DENTATE_LABELS = bids_name("dseg", "", desc=DENTATE)

# --- an entry's derivatives in the output dataset (sub-<label>[/ses-<label>]/<folder>/<name>) ---------

#: role: (folder beside ``anat``, BIDS suffix, extension, desc)
DERIVATIVES: dict[str, tuple[str, str, str, str]] = {
    "dseg": ("anat", "dseg", ".nii.gz", DENTATE),  # the labels: left 1, right 2
    "dseg_sidecar": ("anat", "dseg", ".json", DENTATE),
    "mask": ("anat", "mask", ".nii.gz", "localization"),  # the localized region
    "measures": ("anat", "measures", ".json", DENTATE),  # status, measures and QC fields
    "snapshot": ("figures", "qc", ".png", DENTATE),  # the QC snapshot
}


def derivative_path(root: str | Path, subject: str, session: str | None, role: str, **entities: str | None) -> Path:
    """An entry's derivative of ``role`` (:data:`DERIVATIVES`) under ``root``; ``entities``: the
    image's kept entities (``rec="tkd"``), so that several images of one session keep apart."""
    folder, suffix, ext, desc = DERIVATIVES[role]
    return bids_path(root, subject, session, suffix, ext, folder, **entities, desc=desc)


def derivative_ending(role: str) -> str:
    """What every file of ``role`` ends with (``_desc-dentate_qc.png``): the entry's name comes before."""
    _, suffix, ext, desc = DERIVATIVES[role]
    return "_" + bids_name(suffix, ext, desc=desc)


#: Cohort-level files: role -> path relative to the output dataset.
COHORT_FILES: dict[str, str] = {
    "measures": "cohort/" + bids_name("measures", ".tsv", desc=DENTATE),  # the cohort table
    "measures_sidecar": "cohort/" + bids_name("measures", ".json", desc=DENTATE),
    "failures": "cohort/failures.tsv",
    "review": "cohort/review.tsv",
    "metadata_problems": "cohort/metadata_problems.tsv",
    "labels_lookup": bids_name("dseg", ".tsv", desc=DENTATE),  # the label lookup table (1 left, 2 right)
    "qc_page": "qc.html",
    "dataset_description": "dataset_description.json",
}


def cohort_file(output_dir: str | Path, role: str) -> Path:
    """A cohort-level file of the output dataset (:data:`COHORT_FILES`)."""
    return Path(output_dir) / COHORT_FILES[role]


# --- labelled datasets (manual labels, synthetic truth) -------------------------------------------


def dentate_labels(root: str | Path, subject: str, session: str | None) -> Path:
    """A session's DN labels (left 1, right 2) in a labelled derivative dataset: ``desc-dentate_dseg``."""
    return bids_path(root, subject, session, "dseg", desc=DENTATE)


def structure_labels(root: str | Path, subject: str, session: str | None, structure: str) -> Path:
    """A structure's labels in a synthetic truth dataset: the dentate's ``dseg``, others' ``mask``."""
    if structure == DENTATE:
        return dentate_labels(root, subject, session)
    return bids_path(root, subject, session, "mask", desc=structure)


def dentate_fractions(root: str | Path, subject: str, session: str | None) -> Path:
    """A synthetic session's DN partial-volume fractions (``desc-dentate_probseg``)."""
    return bids_path(root, subject, session, "probseg", desc=DENTATE)


#: Cohort-level files of a synthetic truth dataset.
TRUTH_LOOKUP = bids_name("dseg", ".tsv", desc=DENTATE)
TRUTH_FRACTIONS_SIDECAR = bids_name("probseg", ".json", desc=DENTATE)

# --- the preprocessing folder and a method's result folder ------------------------------------------

#: What a preprocessed image is called after its entry's name.
PREPROC = "_" + bids_name("Chimap", "", desc="preproc")


def preproc_stem(entry: str) -> str:
    """The stem of an entry's preprocessed image, and so of its method's result (``<entry>_desc-preproc_Chimap``)."""
    return entry + PREPROC


def preproc_files(folder: str | Path) -> tuple[Path, Path]:
    """(image, record) of an entry's preprocessing folder (named after the entry)."""
    folder = Path(folder)
    return folder / f"{preproc_stem(folder.name)}.nii.gz", folder / f"{preproc_stem(folder.name)}.json"


#: A method's result folder ``OUTDIR/<stem>/`` (DentateSeg's layout; ``dnqsm segment`` writes it):
#: role -> what follows the stem.
RESULT_FILES: dict[str, str] = {
    "labels": "_seg.nii.gz",  # left 1, right 2 on the input grid
    "region": "_cerebellar_mask.nii.gz",  # the localized region on the input grid
    "crop": "_cropped.nii.gz",  # the canonical crop step two saw
    "crop_raw": "_cropped_seg.nii.gz",  # the network's binary output on the crop
    "crop_labels": "_cropped_seg_labeled.nii.gz",  # sides assigned, largest piece per side kept
    "crop_probability": "_cropped_prob.nii.gz",  # foreground probability on the crop (8-bit)
    "metadata": "_metadata.json",  # status, reasons, volumes, geometry, confidence, provenance
}


def result_file(folder: str | Path, stem: str, role: str) -> Path:
    """A file of one image's result: ``folder`` holds the files (``OUTDIR/<stem>``)."""
    return Path(folder) / f"{stem}{RESULT_FILES[role]}"


def result_path(out_dir: str | Path, stem: str, role: str) -> Path:
    """A file of one image's result under a method's output folder ``out_dir``."""
    return result_file(Path(out_dir) / stem, stem, role)


# --- the documentation's real-map page and the montages the docs hook serves beside it ------------------
REAL_MAP_PAGE = "benchmarks/real.md"
REAL_MONTAGE_FOLDER = "benchmarks/real-montages"


# --- logs and benchmark records of the workflow's jobs ----------------------------------------------


def log_file(work_dir: str | Path, step: str, job: str | None = None) -> Path:
    """A job's log: ``work_dir/logs/<step>.log``, or ``work_dir/logs/<step>/<job>.log`` for a step of many jobs."""
    return Path(work_dir) / "logs" / (f"{step}/{job}.log" if job else f"{step}.log")


def benchmark_file(work_dir: str | Path, step: str, job: str | None = None) -> Path:
    """A job's Snakemake benchmark record (wall time, peak memory), laid out as :func:`log_file`."""
    return Path(work_dir) / "benchmarks" / (f"{step}/{job}.tsv" if job else f"{step}.tsv")
