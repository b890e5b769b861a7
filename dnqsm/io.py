"""File naming and writing: one BIDS path builder, atomic NIfTI/TSV/JSON writers."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # nibabel is imported where images are read or written: every cluster job imports
    import nibabel as nib  # this module while parsing the workflow, and most never touch an image there

_UMASK = os.umask(0)
os.umask(_UMASK)

#: BIDS entity order used in file names.
ENTITY_ORDER = (
    "sub",
    "ses",
    "acq",
    "ce",
    "rec",
    "run",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "chunk",
    "space",
    "label",
    "desc",
)


def bids_name(suffix: str, ext: str = ".nii.gz", **entities: str | None) -> str:
    """Build a BIDS file name such as ``sub-01_ses-02_desc-dentate_dseg.nii.gz``.

    Entities are given without their prefix (``sub="01"``); ``None`` values are left out.
    """
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if entities.get(key) is not None]
    return "_".join(parts + [suffix]) + ext


def bids_path(
    root: str | Path,
    sub: str,
    ses: str | None,
    suffix: str,
    ext: str = ".nii.gz",
    datatype: str = "anat",
    **entities: str | None,
) -> Path:
    """Path of a subject/session file under ``root`` (raw or derivative dataset)."""
    folder = Path(root) / f"sub-{sub}"
    if ses is not None:
        folder = folder / f"ses-{ses}"
    return folder / datatype / bids_name(suffix, ext, sub=sub, ses=ses, **entities)


def prefix(subject: str, session: str | None) -> str:
    """``sub-<label>[_ses-<label>]``: the stem every file of a session starts with."""
    return bids_name("", "", sub=subject, ses=session).rstrip("_")


@contextmanager
def script_log(path: str | Path) -> Iterator[None]:
    """Send a Snakemake script's stdout and stderr to its log file, tracebacks included, so a failed
    job's log always says why."""
    import contextlib
    import traceback

    with open(path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        except BaseException:
            traceback.print_exc(file=log)
            raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    prefix = f".{path.name.split('.')[0]}."
    remove_stale(path.parent, f"{prefix}*.tmp{suffix}")  # left by a killed writer of this same file
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs follow the umask
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale(folder: Path, pattern: str) -> None:
    """Remove what a killed earlier writer of the same output left (hidden staging files or folders).
    Only the job that owns an output writes it (Snakemake locks the working directory), so anything
    matching its own staging pattern is stale."""
    for leftover in folder.glob(pattern):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def check_writable(folder: str | Path, what: str) -> None:
    """Raise InputError in one line when ``folder`` (or the nearest existing folder above it) cannot be
    written: found at the start of a run, not after hours of work."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{what} {folder}: {existing} is a file, not a folder")
    try:  # really try: permission bits, read-only mounts and quotas all show here
        fd, probe = tempfile.mkstemp(prefix=".dnqsm-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {folder}: cannot write in {existing} ({exc.strerror or exc})") from None


def fractions_8bit(values, affine, header=None) -> nib.Nifti1Image:
    """Fractions in [0, 1] (probabilities, partial volumes) as an 8-bit NIfTI with scl_slope 1/255: the
    files stay small and a reader sees fractions in steps of 1/255."""
    import nibabel as nib
    import numpy as np

    img = nib.Nifti1Image(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8), affine, header)
    img.header.set_slope_inter(1 / 255, 0)
    return img


def save_nifti(path: str | Path, img: nib.Nifti1Image) -> Path:
    """Write a NIfTI image atomically (gzip output is deterministic: nibabel stores no mtime)."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically with sorted keys so that reruns are byte-identical."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def column_doc(text: str, unit: str = "") -> dict[str, str]:
    """One column's entry in a BIDS JSON sidecar: its description and, when it has one, its unit."""
    return {"Description": text, **({"Units": unit} if unit else {})}


def write_tsv(path: str | Path, table: pd.DataFrame, sidecar: dict[str, Any] | None = None) -> Path:
    """Write a TSV and, optionally, its JSON sidecar. Plain tab-separated text as BIDS asks: ``n/a`` for
    missing values, no CSV quoting (tabs and line breaks inside a text cell become spaces), and a
    header even when there are no rows."""
    text = table.select_dtypes(include=["object", "string"]).columns
    clean = table.copy()
    for column in text:
        clean[column] = clean[column].map(lambda v: re.sub(r"[\t\r\n]+", " ", v) if isinstance(v, str) else v)
    with atomic_path(path) as tmp:
        clean.to_csv(
            tmp,
            sep="\t",
            index=False,
            na_rep="n/a",
            float_format="%.6g",
            lineterminator="\n",
            quoting=csv.QUOTE_NONE,
            quotechar="\x00",
            doublequote=False,
        )
    if sidecar is not None:
        write_json(Path(str(path)[: -len(".tsv")] + ".json"), sidecar)
    return Path(path)


def read_tsv(path: str | Path) -> pd.DataFrame:
    """Read a BIDS TSV, treating ``n/a`` as missing."""
    return pd.read_csv(
        path,
        sep="\t",
        na_values=["n/a"],
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        dtype={"participant_id": str, "session_id": str},
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class InputError(ValueError):
    """An input file that cannot be used; the message names the file and the problem."""


def load_image(path: str | Path, allow_unknown_orientation: bool = False) -> nib.Nifti1Image:
    """Load a 3D NIfTI and check it is usable: readable, 3D, some finite values, a known orientation.

    Returns a float32 image held in memory. NaN voxels are allowed (masked QSM); they are left for
    callers to handle. Raises InputError.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            img = nib.funcs.squeeze_image(img)
            shape = img.shape
        if len(shape) != 3:
            raise InputError(f"{path}: expected a 3D image, got {len(shape)}D with shape {tuple(shape)}")
        data = np.asanyarray(img.dataobj)
        data = _exact_zeros(img, data)
    except InputError:
        raise
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: a symbolic link to a missing file ({os.readlink(path)})") from None
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # corrupt gzip, truncated file, not an image at all
        raise InputError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from None
    finite = np.isfinite(data)
    if not finite.any():
        raise InputError(f"{path}: no finite values (all NaN or infinite)")
    if not np.any(data[finite] != 0):
        raise InputError(f"{path}: all values are zero")
    if not allow_unknown_orientation and int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0:
        raise InputError(
            f"{path}: sform and qform codes are both 0, so left and right cannot be known; "
            "fix the header, or override explicitly (workflow: orientation.allow_unknown: true; "
            "dnqsm segment: --allow-unknown-orientation)"
        )
    # Keep the validated values in memory (float32, scl_slope applied) so later steps never read or
    # decompress the file again; the header keeps its qform/sform codes.
    header = nib.Nifti1Header.from_header(img.header)
    header.set_data_dtype(np.float32)
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine, header)


def _exact_zeros(img: nib.Nifti1Image, data: np.ndarray) -> np.ndarray:
    """Integer images with a scaling intercept store "zero" (outside the brain) as the raw value whose
    scaled value is nearest 0; float rounding makes it 0.001 or so, which would count as tissue. Those
    voxels become exactly 0 (a raw value that maps to within half a step of 0 *is* 0)."""
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", None), getattr(proxy, "inter", None)  # nibabel keeps scl_* here
    if not np.issubdtype(img.get_data_dtype(), np.integer) or not inter or not slope:
        return data
    zero_raw = np.round(-inter / slope)
    raw = np.asanyarray(proxy.get_unscaled())
    return np.where(raw == zero_raw, 0, data).astype(data.dtype, copy=False)


class staged_folder:
    """Write a folder's files in a hidden sibling and swap it into place only when all are written."""

    def __init__(self, final: str | Path):
        self.final = Path(final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.final.parent, f".{self.final.name}.*")  # staging of a killed earlier run
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)
        if self.final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old.", dir=self.final.parent))
            os.rmdir(old)
            self.final.rename(old)
            self.tmp.rename(self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.final)
