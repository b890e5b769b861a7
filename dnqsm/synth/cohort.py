"""Cohort design: presets, participants, visits and the planted group x time effects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from dnqsm.synth import physics
from dnqsm.synth.acquisition import ORIENTATIONS, SiteProtocol, sample_recon
from dnqsm.synth.physics import Recon

GROUPS = ("control", "ataxia", "ms")


@dataclass(frozen=True)
class GroupEffect:
    """Planted dentate effects of a group, relative to controls at baseline, and per year."""

    volume_offset_pct: float
    chi_offset_ppb: float
    volume_pct_per_year: float
    chi_ppb_per_year: float
    age_range: tuple[float, float]


DEFAULT_EFFECTS: dict[str, GroupEffect] = {
    "control": GroupEffect(0.0, 0.0, -0.3, 0.5, (25, 70)),
    "ataxia": GroupEffect(-20.0, 25.0, -3.0, 4.0, (15, 50)),
    "ms": GroupEffect(-8.0, 8.0, -1.0, 1.5, (25, 60)),
}
#: Dentate iron rises with age: baseline mean chi gains this much per year of age above 40.
CHI_PPB_PER_YEAR_OF_AGE = 0.5
#: Dentate iron accumulates steeply through childhood and levels off in adulthood (Hallgren & Sourander
#: 1958; QSM lifespan studies such as Li et al. 2014): the DN's contrast against cerebellar white matter
#: is scaled by 1 - exp(-age / tau). With tau = 12 years a 10-year-old shows 57 % of the adult contrast,
#: a 20-year-old 81 %, a 40-year-old 96 %. The time constant is dnqsm's assumption, chosen to match the
#: shape of those curves, not a fitted value.
MATURATION_TAU_YEARS = 12.0
#: Ages that real DN cohorts span (the reference paper: 11-64); used by the training-like presets.
WIDE_AGES = {"control": (8, 80), "ataxia": (8, 55), "ms": (18, 65)}
#: The stress preset's baseline ages, in turn: children (lowest DN contrast), adults, older adults.
STRESS_AGE_STRATA = ((8.0, 17.9), (18.0, 59.9), (60.0, 80.0))


@dataclass(frozen=True)
class Preset:
    """A cohort recipe: default size, groups, sites and planted effects."""

    name: str
    code: int  # mixed into every seed, so presets never share random streams
    subjects: int
    sessions: int
    groups: tuple[str, ...]
    sites: tuple[SiteProtocol, ...]
    effects: dict[str, GroupEffect] = field(default_factory=lambda: dict(DEFAULT_EFFECTS))
    missed_visit_prob: float = 0.12
    visit_jitter_years: float = 0.08
    iron_gradient: tuple[float, float] = (0.2, 0.6)  # DN iron heterogeneity (dentate.iron_pattern weight)
    rescan_other_site_prob: float | None = None  # set: every visit is scanned twice the same day (test-retest)
    # set: baseline ages come from these ranges in turn (each group passes through every range), instead
    # of the group's age_range, so that even a small cohort holds children, adults and older people
    age_strata: tuple[tuple[float, float], ...] | None = None
    # True: the nuclei's anatomy is drawn from the wider family (dentate.vary_dentate: 0.85-2.8 cm3, thin
    # to nearly solid ribbons, more folding and turn) from a stream of its own, so that presets without it
    # keep their images (with it, veins that steer around the nuclei take other paths too)
    varied_dentate: bool = False


def _site(name: str, **kw) -> SiteProtocol:
    base = dict(
        inplane_mm=(0.5, 1.0),
        slice_mm=(0.5, 2.0),
        orientations=("RAS", "LAS", "LPS"),
        oblique_prob=0.35,
        oblique_deg=(5, 20),
        unit="ppm",
        scale=(0.9, 1.1),
        dtype="float32",
        mask_fill="zero",
        noise_ppm=(0.001, 0.004),
        crop_top_mm=(0, 35),
        crop_bottom_mm=(0, 10),
    )
    base.update(kw)
    return SiteProtocol(name=name, **base)


def _effects(ages: dict[str, tuple[float, float]]) -> dict[str, GroupEffect]:
    return {g: GroupEffect(**{**asdict(e), "age_range": ages[g]}) for g, e in DEFAULT_EFFECTS.items()}


# Training sites: every reconstruction kind the generator had before total variation (CLASSIC_INVERSIONS,
# so that `train`, `test` and `retest` images stay what the bundled models were trained and benchmarked
# on), redrawn per image, from 0.5 mm to 3 mm slices.
# fmt: off
_TRAIN_SITES = tuple(replace(site, inversions=physics.CLASSIC_INVERSIONS) for site in (
    _site("A", inplane_mm=(0.5, 0.75), slice_mm=(0.5, 1.2), min_voxel_mm3=0.2, recon_per_image=True),
    _site("B", inplane_mm=(0.6, 1.0), slice_mm=(1.0, 2.0), unit="ppb", mask_fill="nan",
          orientations=("LPS", "LAS"), recon_per_image=True),
    _site("C", inplane_mm=(0.6, 0.8), slice_mm=(2.0, 3.0), unit="ppb", dtype="int16", scale=(0.85, 1.15),
          recon_per_image=True),
    _site("D", inplane_mm=(0.8, 1.2), slice_mm=(0.8, 1.5), orientations=("RAS", "LPS", "PIR"), oblique_prob=0.6,
          mask_fill="nan", noise_ppm=(0.002, 0.008), recon_per_image=True),
))
#: Every grid orientation the synthesis knows (sagittal PIR included).
_ALL_ORIENTATIONS = tuple(ORIENTATIONS)
#: The stress preset: every factor varied per image, on its own random streams, the nuclei's anatomy
#: from the wider family (``varied_dentate``).
_STRESS_SITES = (
    _site("S1", inplane_mm=(0.5, 0.5), slice_mm=(0.5, 0.5), min_voxel_mm3=0.1, crop_top_mm=(45, 60),
          recon_per_image=True),
    _site("S2", inplane_mm=(0.6, 0.75), slice_mm=(2.5, 3.0), unit="ppb", dtype="int16", oblique_prob=0.5,
          recon_per_image=True),
    _site("S3", inplane_mm=(0.8, 1.0), slice_mm=(1.5, 2.5), orientations=("LPS", "PIR"), mask_fill="nan",
          scale=(0.7, 1.3), recon_per_image=True),
    _site("S4", inplane_mm=(0.9, 1.1), slice_mm=(0.9, 1.2), orientations=_ALL_ORIENTATIONS,
          oblique_prob=0.5, oblique_deg=(10, 28), unit="ppb", noise_ppm=(0.002, 0.01), recon_per_image=True),
)

#: The wide training preset: the widest range of looks real cohorts bring, each site redrawing every
#: factor per image: 0.4 mm in-plane research slabs to 1.3 mm isotropic and 0.4 x 0.4 x 3 mm clinical
#: slices, obliquity up to 30 degrees, all four orientations, lower SNR, stronger residual background
#: fields and wider calibration scalings than `train`. Its ranges include the `external` sites' voxel
#: sizes and obliquity (its random streams are its own), so a model trained on it no longer meets those
#: sites as unseen on those two factors. The nuclei come from the wider anatomical family
#: (``varied_dentate``: thin to nearly solid ribbons, 0.85-2.8 cm3).
_WIDE_SITES = (
    _site("WA", inplane_mm=(0.4, 0.6), slice_mm=(0.4, 1.0), min_voxel_mm3=0.125, crop_top_mm=(30, 60),
          snr=(40.0, 200.0), recon_per_image=True),
    _site("WB", inplane_mm=(0.4, 0.8), slice_mm=(1.5, 3.0), orientations=_ALL_ORIENTATIONS,
          oblique_prob=0.6, oblique_deg=(5, 30), unit="ppb", dtype="int16", scale=(0.7, 1.2),
          noise_ppm=(0.002, 0.012), snr=(30.0, 150.0), recon_per_image=True),
    _site("WC", inplane_mm=(0.9, 1.3), slice_mm=(0.9, 1.5), orientations=("RAS", "LPS", "PIR"), oblique_prob=0.3,
          scale=(0.75, 1.35), mask_fill="nan", residual_ppm=(-0.05, 0.05), erosion_mm=(1.0, 5.0),
          recon_per_image=True),
    _site("WD", inplane_mm=(0.6, 1.0), slice_mm=(1.0, 2.5), orientations=_ALL_ORIENTATIONS,
          oblique_prob=0.5, oblique_deg=(5, 30), unit="ppb", mask_fill="nan", scale=(0.75, 1.3),
          noise_ppm=(0.002, 0.01), residual_ppm=(-0.03, 0.03), crop_bottom_mm=(0, 15), recon_per_image=True),
)

#: The hard training preset: the looks the robustness benchmark found hardest, pushed beyond `wide`'s
#: ranges and drawn per image: two of every three participants under 18 (low DN contrast), smooth
#: regularized inversions (L2 and iterative, up to about twice `wide`'s regularization) on 0.9-1.5 mm
#: near-isotropic voxels, 2.2-3.2 mm clinical slices, and low SNR with noisier fields and TKD
#: thresholds beyond the usual 0.1-0.25. Its random streams are its own (no benchmark image repeats).
_HARD_SITES = (
    _site("HA", inplane_mm=(0.9, 1.5), slice_mm=(0.9, 1.5), orientations=_ALL_ORIENTATIONS, oblique_prob=0.3,
          scale=(0.7, 1.35), mask_fill="nan", inversions=("l2", "iterative"), l2_lambda=(0.02, 0.1),
          iterative_lambda=(0.005, 0.03), residual_ppm=(-0.05, 0.05), erosion_mm=(1.0, 5.0), recon_per_image=True),
    _site("HB", inplane_mm=(0.5, 0.9), slice_mm=(2.2, 3.2), orientations=_ALL_ORIENTATIONS, oblique_prob=0.5,
          oblique_deg=(5, 30), unit="ppb", dtype="int16", scale=(0.7, 1.3), noise_ppm=(0.003, 0.012),
          snr=(25.0, 120.0), recon_per_image=True),
    _site("HC", inplane_mm=(0.6, 1.1), slice_mm=(1.0, 2.2), orientations=_ALL_ORIENTATIONS, oblique_prob=0.5,
          oblique_deg=(5, 30), mask_fill="nan", scale=(0.75, 1.3), noise_ppm=(0.004, 0.015),
          field_noise_ppm=(0.002, 0.008), snr=(20.0, 80.0), tkd_threshold=(0.08, 0.3), recon_per_image=True),
)
#: The hard preset's baseline ages, in turn: two strata of children and adolescents, then adults.
# fmt: on
HARD_AGE_STRATA = ((8.0, 12.9), (13.0, 17.9), (18.0, 80.0))

# fmt: off
PRESETS: dict[str, Preset] = {
    "demo": Preset(
        "demo", 1, subjects=6, sessions=3, groups=("control", "ataxia"),
        sites=(
            _site("A", inplane_mm=(0.9, 1.0), slice_mm=(1.0, 1.2), orientations=("RAS", "LAS"), oblique_prob=0.0,
                  inversions=("tkd_rescaled",), references=("mean",)),
            _site("B", inplane_mm=(0.85, 1.0), slice_mm=(1.0, 1.5), orientations=("LPS",), oblique_prob=0.5,
                  unit="ppb", dtype="int16", inversions=("l2",), references=("mean",)),
        ),
    ),
    "train": Preset("train", 2, subjects=48, sessions=1, groups=GROUPS, sites=_TRAIN_SITES,
                    effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.7)),
    "test": Preset("test", 3, subjects=20, sessions=1, groups=GROUPS, sites=_TRAIN_SITES,
                   effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.7)),
    "external": Preset(
        "external", 4, subjects=20, sessions=1, groups=GROUPS,
        sites=(
            _site("X", inplane_mm=(0.4, 0.55), slice_mm=(2.0, 2.5), orientations=("LPS",), oblique_prob=0.8,
                  oblique_deg=(15, 28), unit="ppb", scale=(0.75, 0.9), noise_ppm=(0.004, 0.01),
                  inversions=("tkd",), snr=(40.0, 80.0)),
            _site("Y", inplane_mm=(1.1, 1.3), slice_mm=(1.1, 1.3), orientations=("PIR",), oblique_prob=0.0,
                  unit="ppm", scale=(1.1, 1.3), mask_fill="nan", residual_ppm=(-0.04, 0.05), inversions=("l2",)),
            _site("Z", inplane_mm=(0.6, 0.8), slice_mm=(1.5, 2.0), orientations=("RAS", "LAS", "LPS"),
                  unit="ppb", dtype="int16", scale=(0.8, 1.25), noise_ppm=(0.004, 0.01), crop_bottom_mm=(5, 15),
                  inversions=("iterative",)),
        ),
    ),
    "stress": Preset("stress", 5, subjects=24, sessions=1, groups=GROUPS, sites=_STRESS_SITES,
                     effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.8), age_strata=STRESS_AGE_STRATA,
                     varied_dentate=True),
    "wide": Preset("wide", 7, subjects=64, sessions=1, groups=GROUPS, sites=_WIDE_SITES,
                   effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.8), varied_dentate=True),
    "hard": Preset("hard", 8, subjects=48, sessions=1, groups=GROUPS, sites=_HARD_SITES,
                   effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.9), age_strata=HARD_AGE_STRATA),
    # Test-retest: every yearly visit is scanned twice on the same day (session "02" and its rescan
    # "02r"): same anatomy and chi, a new head pose, grid and noise, the site's own reconstruction
    # pipeline; a quarter of the rescans on another site's protocol (and pipeline). No visit is missed.
    "retest": Preset("retest", 6, subjects=12, sessions=2, groups=("control", "ataxia"),
                     sites=tuple(replace(site, recon_per_image=False) for site in _TRAIN_SITES),
                     effects=_effects(WIDE_AGES), iron_gradient=(0.0, 0.7), missed_visit_prob=0.0,
                     rescan_other_site_prob=0.25),
}
# fmt: on


@dataclass(frozen=True)
class Participant:
    label: str
    index: int
    group: str
    sex: str
    age: float  # at baseline
    site: SiteProtocol
    site_scale: float
    site_recon: Recon  # the site's reconstruction pipeline in this cohort
    baseline: datetime


@dataclass(frozen=True)
class Visit:
    session: str
    visit_index: int
    years: float  # since baseline
    acq_time: datetime
    rescan: bool = False  # the second scan of a visit, the same day (retest preset)
    site: SiteProtocol | None = None  # another site's protocol for this scan; None: the participant's


SITE_KEY = 2**31 - 1  # spawn key of the cohort-level site stream (never a subject index)
# A subject's draws come in parts, each from its own stream (seed, preset, subject index, part[, visit]),
# so that adding subjects, visits or a part never changes the others
PERSON_STREAM, VISITS_STREAM, ANATOMY_STREAM, RESCAN_STREAM, DENTATE_VARIETY_STREAM = 0, 1, 2, 3, 4


def scan_stream(visit: Visit) -> int:
    """The stream part of one scan's acquisition, pose and noise: 10 + visit index (1000 + for a rescan)."""
    return (1000 if visit.rescan else 10) + visit.visit_index


def seed_sequence(seed: int, preset: Preset, *key: int) -> np.random.SeedSequence:
    """The random stream for one part of a cohort: (seed, preset, subject, visit) -> stream."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(preset.code, *key))


def participants(preset: Preset, subjects: int, seed: int, first_label: int = 1) -> list[Participant]:
    """Balanced groups and sites; each subject's details come from its own stream. Participants are
    labelled from ``first_label`` (001 by default); the label never changes a subject's draws."""
    scales, recons = site_draws(seed, preset)
    people = []
    for i in range(subjects):
        rng = np.random.default_rng(seed_sequence(seed, preset, i, PERSON_STREAM))
        k, g = divmod(i, len(preset.groups))  # subject i is the k-th of group g
        group = preset.groups[g]
        site = preset.sites[(k + g) % len(preset.sites)]  # each group passes through every site in turn
        baseline = datetime(2019, 1, 7, 8, 0) + timedelta(
            days=int(rng.integers(0, 3 * 365)), minutes=int(rng.integers(0, 9 * 60))
        )
        ages = (
            preset.effects[group].age_range
            if preset.age_strata is None
            else preset.age_strata[k % len(preset.age_strata)]
        )
        age = round(float(rng.uniform(*ages)), 1)
        people.append(
            Participant(
                f"{i + first_label:03d}",
                i,
                group,
                str(rng.choice(["F", "M"])),
                age,
                site,
                scales[site.name],
                recons[site.name],
                baseline,
            )
        )
    return people


def site_draws(seed: int, preset: Preset) -> tuple[dict[str, float], dict[str, Recon]]:
    """Each site's cohort-level intensity scaling and reconstruction pipeline, from the site stream."""
    site_rng = np.random.default_rng(seed_sequence(seed, preset, SITE_KEY))
    scales = {site.name: float(site_rng.uniform(*site.scale)) for site in preset.sites}
    recons = {site.name: sample_recon(site_rng, site) for site in preset.sites}
    return scales, recons


def visits(preset: Preset, person: Participant, sessions: int, seed: int) -> list[Visit]:
    """Yearly visits with jitter; follow-ups are missed now and then, the baseline never. In the
    retest preset each visit is followed the same day by its rescan (session ``<visit>r``)."""
    rng = np.random.default_rng(seed_sequence(seed, preset, person.index, VISITS_STREAM))
    out = []
    for v in range(sessions):
        years = 0.0 if v == 0 else v + float(rng.normal(0, preset.visit_jitter_years))
        missed = v > 0 and rng.random() < preset.missed_visit_prob
        if missed:
            continue
        when = person.baseline
        if v > 0:
            when += timedelta(days=round(years * 365.25), minutes=int(rng.integers(-120, 120)))
        actual = (when - person.baseline).total_seconds() / (365.25 * 86400)
        out.append(Visit(f"{v + 1:02d}", v, round(actual, 4), when))
        if preset.rescan_other_site_prob is not None:  # its own stream: the other presets stay byte-identical
            rrng = np.random.default_rng(seed_sequence(seed, preset, person.index, RESCAN_STREAM, v))
            later = when + timedelta(minutes=int(rrng.integers(30, 240)))
            others = [s for s in preset.sites if s.name != person.site.name]
            site = others[int(rrng.integers(len(others)))] if rrng.random() < preset.rescan_other_site_prob else None
            out.append(Visit(f"{v + 1:02d}r", v, round(actual, 4), later, rescan=True, site=site))
    return out


def maturation(age: float) -> float:
    """Share of the adult DN contrast reached at ``age`` (years); see MATURATION_TAU_YEARS."""
    return float(1 - np.exp(-max(age, 0.0) / MATURATION_TAU_YEARS))


def dentate_state(
    preset: Preset, person: Participant, years: float, base_chi_ppb: float, white_matter_ppb: float
) -> tuple[float, float]:
    """Planted dentate (volume factor, mean chi in ppb) of a participant at ``years`` after baseline.

    The adult DN chi (``base_chi_ppb``) is brought towards the surrounding white matter's by the
    maturation at the baseline age, so children have lower DN contrast; the yearly changes are the
    group's planted ones, exactly.
    """
    effect = preset.effects[person.group]
    volume = (1 + effect.volume_offset_pct / 100) * (1 + effect.volume_pct_per_year / 100 * years)
    adult = base_chi_ppb + CHI_PPB_PER_YEAR_OF_AGE * max(person.age - 40, 0.0)
    chi = (
        white_matter_ppb
        + (adult - white_matter_ppb) * maturation(person.age)
        + effect.chi_offset_ppb
        + effect.chi_ppb_per_year * years
    )
    return volume, chi
