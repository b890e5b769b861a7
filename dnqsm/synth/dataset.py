"""Write a synthetic cohort as a BIDS dataset with a ground-truth derivative and a truth table.

The dataset is built in a hidden temporary folder beside the output and moved into place only when
complete, so a failed or interrupted run never leaves a half-written dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from dnqsm import __version__, names
from dnqsm.io import bids_path, fractions_8bit, save_nifti, write_json, write_tsv
from dnqsm.synth.acquisition import LABEL_LEFT, LABEL_RIGHT, render, sample_acquisition
from dnqsm.synth.anatomy import SubjectAnatomy, build_anatomy
from dnqsm.synth.cohort import (
    ANATOMY_STREAM,
    CHI_PPB_PER_YEAR_OF_AGE,
    DENTATE_VARIETY_STREAM,
    MATURATION_TAU_YEARS,
    PRESETS,
    Preset,
    dentate_state,
    maturation,
    participants,
    scan_stream,
    seed_sequence,
    site_draws,
    visits,
)
from dnqsm.synth.template import brain_distance_mm, load_template
from dnqsm.units import to_ppb

BIDS_VERSION = "1.10.0"
TRUTH_DERIVATIVE = Path("derivatives") / "manual"
SIDES = (("left", LABEL_LEFT), ("right", LABEL_RIGHT))


class SynthError(Exception):
    """A problem with the arguments or the output location, phrased for the user."""


def write_dataset(
    out: str | Path,
    preset: str,
    subjects: int | None = None,
    sessions: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    jobs: int = 1,
    age_strata: tuple[tuple[float, float], ...] | None = None,
    first_label: int = 1,
    reuse: bool = False,
) -> Path:
    """Generate a cohort into ``out``; return the path. Raises SynthError on bad arguments.
    ``age_strata``: baseline ages drawn from these (low, high) year ranges in turn, each group passing
    through each, instead of the preset's ranges (e.g. a cohort one third children).
    ``first_label``: participants are numbered from this label (e.g. 101), so that cohorts can be
    pooled without two participants sharing a label; the images do not depend on it.
    ``reuse``: a finished dataset already in ``out`` made with the same arguments by the same generator
    (dnqsm version; the hash of its source and of the versions of the libraries that shape the images,
    :func:`generator_code`) is kept as it is (synthesis is deterministic: it would come out the same),
    otherwise it is made (replacing ``out`` only with ``overwrite``)."""
    if preset not in PRESETS:
        raise SynthError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    if age_strata is not None:
        if not age_strata or any(not 0 <= lo <= hi for lo, hi in age_strata):
            raise SynthError(f"age ranges must be non-empty LOW-HIGH pairs with 0 <= LOW <= HIGH (got {age_strata})")
        recipe = replace(recipe, age_strata=tuple((float(lo), float(hi)) for lo, hi in age_strata))
    subjects = recipe.subjects if subjects is None else subjects
    sessions = recipe.sessions if sessions is None else sessions
    if subjects < 1:
        raise SynthError(f"--subjects must be at least 1 (got {subjects})")
    if sessions < 1:
        raise SynthError(f"--sessions must be at least 1 (got {sessions})")
    if seed < 0:
        raise SynthError(f"--seed must be a non-negative integer (got {seed})")
    if jobs < 1:
        raise SynthError(f"--jobs must be at least 1 (got {jobs})")
    if first_label < 1:
        raise SynthError(f"--first-label must be at least 1 (got {first_label})")
    out = Path(out).absolute()
    if reuse and _made_with(out, _generator(recipe, subjects, sessions, seed, first_label)):
        return out
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"output {out} exists and is not empty; pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise SynthError(f"cannot write output {out}: {exc.strerror or exc}") from exc
    try:
        _write(tmp, recipe, subjects, sessions, seed, jobs, first_label)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


#: the libraries whose numerics or data shape the images: numpy/scipy (random streams, FFTs,
#: filters), nibabel (writing), nilearn (its wheel carries the MNI template), qsm-forward (signal, noise)
SHAPING_LIBRARIES = ("numpy", "scipy", "nibabel", "nilearn", "qsm-forward")


def library_versions() -> tuple[tuple[str, str], ...]:
    """(distribution, installed version) of each of :data:`SHAPING_LIBRARIES`."""
    return tuple((name, metadata.version(name)) for name in SHAPING_LIBRARIES)


@lru_cache(maxsize=4)
def generator_code(package: Path = Path(__file__).parent, libraries: tuple[tuple[str, str], ...] | None = None) -> str:
    """The first 12 hex digits of the sha256 of the generator's own source (``package``, by default
    ``dnqsm/synth``: its ``*.py`` and ``../units.py``) and of the versions of the libraries that shape
    its images (``libraries``, by default the installed :func:`library_versions`): a generator changed
    between releases keeps its version number, not this, and another numpy or template may draw
    other images from the same code."""
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")) + [package.parent / "units.py"]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for name, version in library_versions() if libraries is None else libraries:
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()[:12]


def _generator(preset: Preset, subjects: int, sessions: int, seed: int, first_label: int) -> dict[str, str]:
    """The dataset_description GeneratedBy entry: everything the images depend on, in words (the
    arguments, the version, and ``code=``: the hash of the generator's source and of the shaping
    libraries' versions)."""
    return {
        "Name": "dnqsm synth",
        "Version": __version__,
        "Description": f"preset={preset.name} subjects={subjects} sessions={sessions} seed={seed}"
        + (f" ages={_ages_text(preset.age_strata)}" if preset.age_strata != PRESETS[preset.name].age_strata else "")
        + (f" first_label={first_label}" if first_label != 1 else "")
        + f" code={generator_code()}",
    }


def _made_with(out: Path, generator: dict[str, str]) -> bool:
    """Whether ``out`` holds a dataset generated with the same arguments and generator (a dataset
    is renamed into ``out`` only when complete, so one that is there is finished)."""
    try:
        made = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False
    return made == generator


def _write(root: Path, preset: Preset, subjects: int, sessions: int, seed: int, jobs: int, first_label: int) -> None:
    people = participants(preset, subjects, seed, first_label)
    # one task per scan, not per participant: participants differ up to 2x in cost (visits, voxel
    # sizes), so per-participant tasks left one worker alone on the last, costliest one
    tasks = [
        (root, preset.name, seed, person, visit)
        for person in people
        for visit in visits(preset, person, sessions, seed)
    ]
    if jobs == 1:
        rows = [_scan(task) for task in tasks]
    else:
        load_template()  # once, before the workers fork (both are cached per process): not once per worker
        brain_distance_mm()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork")) as pool:
            rows = list(pool.map(_scan, tasks))
    person_draws.cache_clear()  # the last participant's anatomy (tens of MB) is not needed any more
    sessions_of: dict[str, list[dict]] = {}  # each participant's scans, in visit order
    for row in rows:
        sessions_of.setdefault(row["participant_id"], []).append(
            {"session_id": row["session_id"], "acq_time": row["acq_time"], "age": row["age"]}
        )
    for person in people:
        write_tsv(
            root / f"sub-{person.label}" / f"sub-{person.label}_sessions.tsv",
            pd.DataFrame(sessions_of[f"sub-{person.label}"]),
        )
    truth = pd.DataFrame(rows)
    generator = _generator(preset, subjects, sessions, seed, first_label)
    write_json(
        root / "dataset_description.json",
        {
            "Name": f"dnqsm synthetic QSM cohort ({preset.name})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [generator],
        },
    )
    write_tsv(
        root / "participants.tsv",
        pd.DataFrame(
            {
                "participant_id": [f"sub-{p.label}" for p in people],
                "group": [p.group for p in people],
                "sex": [p.sex for p in people],
                "age": [p.age for p in people],
                "site": [p.site.name for p in people],
            }
        ),
        {
            "group": {
                "Description": "Diagnostic group",
                "Levels": {"control": "healthy control", "ataxia": "cerebellar ataxia", "ms": "multiple sclerosis"},
            },
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            "age": {"Description": "Age at the baseline visit", "Units": "year"},
            "site": {"Description": "Acquisition site"},
        },
    )
    write_json(
        root / "sessions.json",
        {
            "acq_time": {"Description": "Date and time of the visit", "Units": "ISO 8601"},
            "age": {"Description": "Age at the visit", "Units": "year"},
        },
    )
    write_json(root / "Chimap.json", {"MagneticFieldStrength": 3.0, "Manufacturer": "dnqsm synth"})
    deriv = root / TRUTH_DERIVATIVE
    write_json(
        deriv / "dataset_description.json",
        {
            "Name": "Ground-truth dentate nucleus labels",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [generator],
            "SourceDatasets": [{"URL": "../.."}],
        },
    )
    write_tsv(
        deriv / names.TRUTH_LOOKUP,
        pd.DataFrame(
            {
                "index": [LABEL_LEFT, LABEL_RIGHT],
                "name": ["left dentate nucleus", "right dentate nucleus"],
                "abbreviation": ["DN_L", "DN_R"],
            }
        ),
    )
    write_json(
        deriv / names.TRUTH_FRACTIONS_SIDECAR,
        {
            "Description": "Share of each voxel's signal that comes from the dentate nucleus as the image holds it "
            "(the voxel's in-plane resolution, averaged across the slice thickness), before QSM "
            "reconstruction and noise: what a perfect reader of the image could know of the labels "
            f"at best. The labels ({names.DENTATE_LABELS}) are the analytic nucleus at each voxel centre.",
            "Volumes": ["left dentate nucleus", "right dentate nucleus"],
        },
    )
    write_tsv(deriv / "truth.tsv", truth, _truth_sidecar(preset, seed))


def fraction_image(fraction: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """The DN partial-volume fractions (2, x, y, z) as a 4D probseg (volume 0 left, 1 right), in 8 bits
    (steps of 1/255) with scl_slope: the files stay small and a reader sees fractions in [0, 1]."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    img = fractions_8bit(np.moveaxis(fraction, 0, -1), affine, header)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def _ages_text(strata: tuple[tuple[float, float], ...] | None) -> str:
    return ",".join(f"{lo:g}-{hi:g}" for lo, hi in strata or ())


def parse_age_strata(text: str) -> tuple[tuple[float, float], ...]:
    """``"8-17,18-59,60-80"`` -> ((8, 17), (18, 59), (60, 80)); SynthError naming the bad part."""
    strata = []
    for part in text.split(","):
        try:
            lo, hi = (float(v) for v in part.strip().split("-"))
        except ValueError:
            raise SynthError(f"--ages: {part.strip()!r} is not an age range such as 8-17 (years)") from None
        strata.append((lo, hi))
    return tuple(strata)


@dataclass(frozen=True)
class PersonDraws:
    """What every scan of one participant shares, drawn from the participant's anatomy stream."""

    anatomy: SubjectAnatomy
    base_chi_ppb: dict[str, float]  # adult DN chi per side
    iron_gradient: float
    white_matter_ppb: float


@lru_cache(maxsize=1)
def person_draws(seed: int, preset_name: str, person_index: int) -> PersonDraws:
    """The participant's anatomy and DN draws (cached for the participant's next scan in this process)."""
    preset = PRESETS[preset_name]
    rng = np.random.default_rng(seed_sequence(seed, preset, person_index, ANATOMY_STREAM))
    variety = (
        np.random.default_rng(seed_sequence(seed, preset, person_index, DENTATE_VARIETY_STREAM))
        if preset.varied_dentate
        else None
    )
    anatomy = build_anatomy(rng, variety)
    base_chi = {"left": float(rng.uniform(70, 95))}
    base_chi["right"] = base_chi["left"] + float(rng.normal(0, 4))
    iron_gradient = float(rng.uniform(*preset.iron_gradient))
    return PersonDraws(anatomy, base_chi, iron_gradient, to_ppb(anatomy.tissue_chi_ppm["cerebellar_wm"], "ppm"))


def _scan(task: tuple) -> dict:
    """Generate one scan of one participant; return its truth-table row."""
    root, preset_name, seed, person, visit = task
    preset = PRESETS[preset_name]
    draws = person_draws(seed, preset_name, person.index)
    anatomy, base_chi, iron_gradient = draws.anatomy, draws.base_chi_ppb, draws.iron_gradient
    # a rescan draws its own pose, grid and noise (its own stream); on another site's protocol it
    # also gets that site's scaling and pipeline; the DN state is the visit's
    vrng = np.random.default_rng(seed_sequence(seed, preset, person.index, scan_stream(visit)))
    if visit.site is None:
        acq = sample_acquisition(vrng, person.site, person.site_scale, person.site_recon)
    else:
        scales, recons = site_draws(seed, preset)
        acq = sample_acquisition(vrng, visit.site, scales[visit.site.name], recons[visit.site.name])
    volume_factor, chi_ppb = {}, {}
    for side, _ in SIDES:
        volume_factor[side], chi_ppb[side] = dentate_state(
            preset, person, visit.years, base_chi[side], draws.white_matter_ppb
        )
    size = {side: anatomy.dn_size_factor * volume_factor[side] ** (1 / 3) for side, _ in SIDES}
    out = render(anatomy, acq, vrng, size, {s: chi_ppb[s] / 1000.0 for s, _ in SIDES}, iron_gradient)
    values = _write_scan(root, person.label, visit.session, out, acq)
    row = _visit_row(person, visit, acq)
    row.update(_acquisition_row(acq))
    row["dn_iron_gradient"] = iron_gradient
    row["dn_maturation"] = maturation(person.age)
    row.update({f"shape_{axis}": n for axis, n in zip("ijk", out.dentate_dseg.shape)})
    row.update({f"head_scale_{axis}": float(v) for axis, v in zip("xyz", anatomy.head_scale)})
    voxel_mm3 = float(abs(np.linalg.det(out.affine[:3, :3])))
    for side, label in SIDES:
        shape = anatomy.dentate[side]
        mask = out.dentate_dseg == label
        row[f"dn_{side}_volume_mm3"] = float(mask.sum() * voxel_mm3)
        row[f"dn_{side}_mean_chi_ppb"] = float(to_ppb(values[mask].mean(), acq.unit)) if mask.any() else float("nan")
        row[f"dn_{side}_contrast_ppb"] = dentate_contrast(values, mask, out.dentate_dseg > 0, acq.unit, acq.scale)
        row[f"dn_{side}_planted_chi_ppb"] = chi_ppb[side]
        row[f"dn_{side}_planted_volume_factor"] = volume_factor[side]
        row[f"dn_{side}_size_factor"] = size[side]
        row[f"dn_{side}_thickness_mm"] = shape.thickness_mm
        row.update({f"dn_{side}_center_mni_{a}": float(v) for a, v in zip("xyz", shape.center)})
    row.update({f"chi_{k}_ppm": v for k, v in anatomy.tissue_chi_ppm.items()})
    return row


def _write_scan(root: Path, sub: str, ses: str, out, acq) -> np.ndarray:
    """One scan's image and sidecar, and its truth (labels, masks, partial-volume fractions) under the
    truth derivative; the image's values as any reader sees them (scl_slope applied)."""
    image_path = save_nifti(bids_path(root, sub, ses, "Chimap"), out.image)
    values = nib.load(image_path).get_fdata()  # what any reader sees (scl_slope applied)
    write_json(bids_path(root, sub, ses, "Chimap", ".json"), {"Units": acq.unit, "InstitutionName": f"site {acq.site}"})
    deriv = root / TRUTH_DERIVATIVE
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    for name, data in (("dentate", out.dentate_dseg), ("cerebellum", out.cerebellum_mask)):
        img = nib.Nifti1Image(data, out.affine, header)
        img.set_sform(out.affine, code=1)
        img.set_qform(out.affine, code=1)
        save_nifti(names.structure_labels(deriv, sub, ses, name), img)
    save_nifti(names.dentate_fractions(deriv, sub, ses), fraction_image(out.dentate_fraction, out.affine))
    return values


def _visit_row(person, visit, acq) -> dict:
    """Who and when: the truth-table columns of the participant and the visit."""
    return {
        "participant_id": f"sub-{person.label}",
        "session_id": f"ses-{visit.session}",
        "group": person.group,
        "sex": person.sex,
        "baseline_age": person.age,
        "age": round(person.age + visit.years, 2),
        "site": acq.site,
        "years_since_baseline": visit.years,
        "acq_time": visit.acq_time.isoformat(),
        "visit": f"{visit.visit_index + 1:02d}",
        "rescan": visit.rescan,
    }


def _acquisition_row(acq) -> dict:
    """How: the truth-table columns of the acquisition and the reconstruction."""
    row: dict = {}
    acq_fields = asdict(acq)
    for key in ("voxel_mm", "rotation_deg", "translation_mm"):
        for axis, value in zip("xyz", acq_fields.pop(key)):
            row[f"{key.rsplit('_', 1)[0]}_{axis}_{key.rsplit('_', 1)[1]}"] = value
    recon = acq_fields.pop("recon")
    residual = recon.pop("residual_ppm")
    row.update({f"acq_{k}": v for k, v in acq_fields.items() if k != "site"})
    row.update({f"recon_{k}": v for k, v in recon.items()})
    for where, value in zip(("petrous_left", "petrous_right", "sinus"), residual):
        row[f"recon_residual_{where}_ppm"] = value
    return row


def dentate_contrast(values: np.ndarray, label: np.ndarray, both: np.ndarray, unit: str, scale: float) -> float:
    """How the DN stands out in the stored image: mean inside the label minus the mean of a 1-3 voxel
    shell around both nuclei, in ppb of true susceptibility (the site's scaling divided out)."""
    if not label.any():
        return float("nan")
    from scipy import ndimage

    near = ndimage.binary_dilation(label, iterations=3) & ~ndimage.binary_dilation(both, iterations=1)
    finite = np.isfinite(values)
    inside, shell = values[label & finite], values[near & finite]
    if not inside.size or not shell.size:
        return float("nan")
    return float(to_ppb(inside.mean() - shell.mean(), unit) / scale)


def _truth_sidecar(preset: Preset, seed: int) -> dict:
    """Column descriptions and every cohort-level generating parameter."""
    desc = {
        "participant_id": "Participant label",
        "session_id": "Session label",
        "group": "Diagnostic group",
        "baseline_age": {"Description": "Age at baseline", "Units": "year"},
        "age": {"Description": "Age at the visit", "Units": "year"},
        "years_since_baseline": {"Description": "Time since the baseline visit", "Units": "year"},
        "visit": "Visit number; a visit and its same-day rescan share it (retest preset)",
        "rescan": "True for the second scan of a visit, the same day: same anatomy and chi, new pose, grid and noise "
        "(another site's protocol now and then)",
        "acq_unit": "Unit the image is stored in (after acq_scale)",
        "acq_scale": "Site intensity scaling applied to the true susceptibility (fixed per site in a cohort)",
        "acq_dtype": "Storage type (int16 images carry scl_slope)",
        "acq_mask_fill": "Value outside the brain mask (zero or nan)",
        "acq_orientation": "Voxel axis directions before oblique tilt",
        "acq_oblique_deg": {"Description": "Tilt of the slice grid about x", "Units": "degree"},
        "dn_left_volume_mm3": {
            "Description": "True left DN volume: label-1 voxel count x voxel volume",
            "Units": "mm^3",
        },
        "dn_right_volume_mm3": {
            "Description": "True right DN volume: label-2 voxel count x voxel volume",
            "Units": "mm^3",
        },
        "dn_left_mean_chi_ppb": {
            "Description": "Mean image value under label 1, converted to ppb from acq_unit",
            "Units": "ppb",
        },
        "dn_right_mean_chi_ppb": {
            "Description": "Mean image value under label 2, converted to ppb from acq_unit",
            "Units": "ppb",
        },
        "dn_left_planted_chi_ppb": {
            "Description": "Planted tissue susceptibility of the left DN (before site scaling, noise, partial volume)",
            "Units": "ppb",
        },
        "dn_right_planted_chi_ppb": {"Description": "Planted tissue susceptibility of the right DN", "Units": "ppb"},
        "dn_left_planted_volume_factor": "Planted volume relative to the subject's control-like baseline "
        "(group offset x yearly change)",
        "dn_right_planted_volume_factor": "Planted volume relative to the subject's control-like baseline",
        "dn_left_contrast_ppb": {
            "Description": "Mean image value under label 1 minus a 1-3 voxel shell around the nuclei, "
            "site scaling divided out",
            "Units": "ppb",
        },
        "dn_right_contrast_ppb": {"Description": "As dn_left_contrast_ppb, for label 2", "Units": "ppb"},
        "dn_maturation": "Share of the adult DN contrast at the baseline age: 1 - exp(-age / dn_maturation_tau_years)",
        "dn_iron_gradient": "Weight of the DN iron gradient (brighter away from the hilum), 0 = uniform",
        "recon_inversion": "Dipole inversion: tkd, tkd_rescaled, l2 (closed form, gradient penalty), iterative "
        "(weighted L2, conjugate gradient) or tv (total variation, ADMM)",
        "recon_reference": "Referencing of the map: mean (whole brain), csf or none",
        "recon_threshold": "TKD threshold on |D| (used by tkd and tkd_rescaled)",
        "recon_regularization": "Gradient-penalty weight (l2, iterative, tv)",
        "recon_erosion_mm": {"Description": "Brain-mask erosion by background-field removal", "Units": "mm"},
        "recon_snr": "Peak SNR of the simulated multi-echo magnitude (qsm-forward); 0 = Gaussian field noise of "
        "recon_field_noise_ppm",
    }
    return {
        **desc,
        "GeneratingParameters": {
            "preset": preset.name,
            "seed": seed,
            "effects": {g: asdict(e) for g, e in preset.effects.items() if g in preset.groups},
            "chi_ppb_per_year_of_age_above_40": CHI_PPB_PER_YEAR_OF_AGE,
            "dn_maturation_tau_years": MATURATION_TAU_YEARS,
            "iron_gradient": list(preset.iron_gradient),
            "varied_dentate": preset.varied_dentate,
            "missed_visit_prob": preset.missed_visit_prob,
            "visit_jitter_years": preset.visit_jitter_years,
            "sites": {s.name: asdict(s) for s in preset.sites},
        },
    }
