"""Longitudinal statistics of the cohort table: linear mixed-effects models (statsmodels), annualised
change per group, baseline group differences (pingouin), per-subject slopes and trial sample sizes.

Every estimate comes from a library; this module chooses models, handles messy cohorts (one-visit
subjects, missing covariates, small groups, non-convergence) and says what it did in ``notes``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dnqsm.analysis.cohort import ENTITIES_COLUMN, ID_COLUMNS, entry_key

#: Measures modelled over time: column -> (label, unit).
MEASURES: dict[str, tuple[str, str]] = {
    "left_volume_mm3": ("left DN volume", "mm³"),
    "right_volume_mm3": ("right DN volume", "mm³"),
    "total_volume_mm3": ("total DN volume", "mm³"),
    "left_chi_mean_ppb": ("left DN mean χ", "ppb"),
    "right_chi_mean_ppb": ("right DN mean χ", "ppb"),
    "total_chi_mass_ppb_mm3": ("DN susceptibility mass", "ppb·mm³"),
}
TIME = "years"
SUBJECT = "participant_id"


@dataclass
class Settings:
    reference_group: str = "control"
    covariates: list[str] = field(default_factory=lambda: ["baseline_age", "sex", "site"])
    random_slope: bool = True
    min_subjects_per_group: int = 3
    min_subjects_for_random_slope: int = 6
    slowing: list[float] = field(default_factory=lambda: [0.3, 0.5])
    alpha: float = 0.05
    power: float = 0.8
    exclude_review: bool = False  # leave out sessions whose segmentation needs review (QC ratings override)
    image_entities: str | None = None  # sessions with several images: the one to model (e.g. "rec-tkd")


@dataclass
class Fit:
    """One measure's fitted model and what was done to get it."""

    measure: str
    model: str  # "mixed: random intercept and slope", "mixed: random intercept", "OLS ..."
    formula: str
    result: Any
    data: pd.DataFrame
    converged: bool
    messages: list[str]
    dropped: pd.DataFrame


def one_image_per_session(table: pd.DataFrame, image_entities: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Where sessions have several images (column ``image_entities``), keep one per session for the
    models (a session must not count twice): the image with ``image_entities`` (config
    ``stats.image_entities``), else the first in sorted order; the note says which were left out."""
    if ENTITIES_COLUMN not in table or not table.duplicated(ID_COLUMNS, keep=False).any():
        return table, []
    entities = table[ENTITIES_COLUMN].fillna("").astype(str)
    order = table.assign(_wanted=entities != (image_entities or ""), _entities=entities).sort_values(
        ID_COLUMNS + ["_wanted", "_entities"] if image_entities is not None else ID_COLUMNS + ["_entities"]
    )
    kept = order.drop_duplicates(ID_COLUMNS).index
    left = table.index.difference(kept)
    names = ", ".join(entry_key(table.loc[i]) for i in left)
    how = (
        f"stats.image_entities: {image_entities!r}"
        if image_entities is not None
        else "the first in sorted order per session; set stats.image_entities to choose"
    )
    note = f"{len(left)} image(s) left out: another image of the same session is modelled ({how}; {names})"
    return table.loc[sorted(kept)], [note]


def analysis_table(
    table: pd.DataFrame,
    ratings: pd.DataFrame | None = None,
    exclude_review: bool = False,
    image_entities: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Sessions usable for statistics: not failed, not rated ``fail`` in QC, with a time since baseline.

    Sessions whose segmentation needs review (status ``review``) stay in by default and are listed;
    ``exclude_review`` leaves them out. A QC rating overrides either way: ``pass`` keeps a session
    under review, ``fail`` removes any session. ``years`` comes from the table's
    ``years_since_baseline`` (acq_time, else age at visit). Sessions with several images keep one
    (:func:`one_image_per_session`)."""
    data, notes = one_image_per_session(table.copy(), image_entities)
    key = pd.Series([entry_key(r) for _, r in data.iterrows()], index=data.index, dtype=object)
    rated = {}
    if ratings is not None and len(ratings):
        rated = {entry_key(r): r["rating"] for _, r in ratings.iterrows()}
    rating = key.map(rated)
    failed = ~data["status"].isin(["ok", "review"])
    if failed.any():
        stages = (
            data.loc[failed, "failed_stage"].fillna("unknown stage")
            if "failed_stage" in data
            else pd.Series("unknown stage", index=data.index[failed])
        )
        for stage, count in stages.value_counts().sort_index().items():
            notes.append(f"{int(count)} session(s) left out: failed in {stage}")
    review = (data["status"] == "review") & ~failed
    if review.any():
        names = ", ".join(key[review])
        if exclude_review:
            kept = review & (rating == "pass")
            dropped = review & ~kept
            if dropped.any():
                notes.append(
                    f"{int(dropped.sum())} session(s) left out: segmentation needs review "
                    f"(stats.exclude_review; {', '.join(key[dropped])})"
                )
            if kept.any():
                notes.append(
                    f"{int(kept.sum())} session(s) under review kept: rated pass in QC ({', '.join(key[kept])})"
                )
            failed = failed | dropped
        else:
            notes.append(
                f"{int(review.sum())} session(s) included whose segmentation needs review ({names}); "
                "set stats.exclude_review to leave them out"
            )
    excluded = (rating == "fail") & ~failed
    if excluded.any():
        notes.append(f"{int(excluded.sum())} session(s) left out: rated fail in QC ({', '.join(key[excluded])})")
    data = data[~(failed | excluded)]
    if "years_since_baseline" not in data:  # e.g. a derivative dataset without sessions.tsv: said, not fatal
        notes.append(
            "no visit times: the cohort table has no years_since_baseline (add acq_time or age to the "
            "dataset's sub-*/sub-*_sessions.tsv); nothing longitudinal can be modelled"
        )
        data["years_since_baseline"] = np.nan
    data = data.assign(**{TIME: data["years_since_baseline"]})
    if "group" not in data:
        data["group"] = np.nan
    return data.reset_index(drop=True), notes


def usable_groups(data: pd.DataFrame, settings: Settings) -> tuple[list[str], list[str]]:
    """Groups with enough subjects, reference first; and a note for each group left out."""
    notes = []
    if "group" not in data or data["group"].isna().all():
        return [], ["no group column in participants.tsv: models have no group terms"]
    counts = data.groupby("group")[SUBJECT].nunique()
    keep = [g for g, n in counts.items() if n >= settings.min_subjects_per_group]
    for group, n in counts.items():
        if n < settings.min_subjects_per_group:
            notes.append(
                f"group {group!r} has {n} subject(s), fewer than stats.min_subjects_per_group="
                f"{settings.min_subjects_per_group}: left out of the models"
            )
    if settings.reference_group in keep:
        keep = [settings.reference_group] + sorted(g for g in keep if g != settings.reference_group)
    elif keep:
        notes.append(f"reference group {settings.reference_group!r} is not usable; using {sorted(keep)[0]!r}")
        keep = sorted(keep)
    if len(keep) < 2:
        notes.append("fewer than two usable groups: models estimate the change over time without group terms")
    return keep, notes


def _covariate_terms(data: pd.DataFrame, covariates: list[str], notes: list[str]) -> list[str]:
    terms = []
    for name in covariates:
        if name not in data:
            notes.append(f"covariate {name!r} is not a column of the cohort table: left out")
        elif data[name].dropna().nunique() < 2:
            notes.append(f"covariate {name!r} has a single value in the data: left out")
        elif pd.api.types.is_numeric_dtype(data[name]):
            terms.append(name)
        else:
            terms.append(f"C({name})")
    return terms


def formula_for(measure: str, groups: list[str], covariate_terms: list[str]) -> str:
    rhs = f"{TIME} * C(group)" if len(groups) >= 2 else TIME
    return " + ".join([f"{measure} ~ {rhs}", *covariate_terms])


def fit_measure(data: pd.DataFrame, measure: str, settings: Settings, groups: list[str]) -> Fit:
    """Mixed model ``measure ~ years * group + covariates`` with a random intercept per subject and,
    when configured and the data have enough follow-up, a random slope; simpler models are fitted (and
    labelled) when one does not converge."""
    import statsmodels.formula.api as smf

    messages: list[str] = []
    frame = data[data["group"].isin(groups)] if len(groups) >= 2 else data
    terms = _covariate_terms(frame, settings.covariates, messages)
    needed = (
        [measure, TIME, SUBJECT]
        + (["group"] if len(groups) >= 2 else [])
        + [t.removeprefix("C(").removesuffix(")") for t in terms]
    )
    missing = frame[needed].isna().any(axis=1)
    gaps = frame.loc[missing, needed].isna()
    dropped = frame.loc[missing, ["participant_id", "session_id"]].assign(
        measure=measure, missing=[",".join(gaps.columns[row]) for row in gaps.to_numpy()]
    )
    if missing.any():
        messages.append(f"{int(missing.sum())} row(s) dropped for missing values: see dropped_rows.tsv")
    frame = frame.loc[~missing].copy()
    if len(groups) >= 2:
        frame["group"] = pd.Categorical(frame["group"], categories=groups)
    formula = formula_for(measure, groups, terms)
    if terms and not _estimable(formula, frame):
        messages.append(
            f"too few sessions ({len(frame)}) or subjects to estimate the covariates "
            f"{', '.join(terms)}: fitted without them"
        )
        formula = formula_for(measure, groups, [])
    if not _estimable(formula, frame):
        messages.append(f"too few sessions ({len(frame)}) or subjects for '{formula}': not modelled")
        return Fit(measure, "not modelled", formula, None, frame, False, messages, dropped)
    followed = int((frame.groupby(SUBJECT)[TIME].nunique() >= 2).sum())
    attempts = []
    if settings.random_slope and followed >= settings.min_subjects_for_random_slope:
        attempts.append(("mixed: random intercept and slope", f"~{TIME}"))
    elif settings.random_slope:
        messages.append(
            f"random slope not fitted: {followed} subject(s) with follow-up, fewer than "
            f"{settings.min_subjects_for_random_slope}"
        )
    attempts.append(("mixed: random intercept", "~1"))
    for label, re_formula in attempts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = smf.mixedlm(formula, frame, groups=frame[SUBJECT], re_formula=re_formula).fit(reml=True)
            except (np.linalg.LinAlgError, ValueError) as exc:
                messages.append(f"{label}: fit failed ({exc})")
                continue
        trouble = list(
            dict.fromkeys(
                str(w.message)
                for w in caught
                if any(word in str(w.message).lower() for word in ("converge", "singular", "boundary"))
            )
        )
        if result.converged and not trouble:
            if label != attempts[0][0]:
                label += " (fallback: the random-slope model did not converge)"
            return Fit(measure, label, formula, result, frame, True, messages, dropped)
        messages.append(f"{label} did not converge cleanly: {'; '.join(trouble) or 'converged=False'}")
    result = smf.ols(formula, frame).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(frame[SUBJECT])[0]})
    return Fit(
        measure,
        "OLS with subject-clustered errors (fallback: no mixed model converged)",
        formula,
        result,
        frame,
        False,
        messages,
        dropped,
    )


def _estimable(formula: str, frame: pd.DataFrame) -> bool:
    """Whether the fixed effects are identifiable with residual degrees of freedom to spare."""
    import patsy

    if frame.empty:
        return False
    design = patsy.dmatrix(formula.split("~", 1)[1], frame, return_type="dataframe")
    return np.linalg.matrix_rank(design.to_numpy()) == design.shape[1] and len(frame) > design.shape[1] + 1


def _fe_names(fit: Fit) -> list[str]:
    return list(fit.result.fe_params.index) if hasattr(fit.result, "fe_params") else list(fit.result.params.index)


def fixed_effects(fit: Fit, alpha: float) -> pd.DataFrame:
    names = _fe_names(fit)
    ci = fit.result.conf_int(alpha).loc[names]
    return pd.DataFrame(
        {
            "measure": fit.measure,
            "model": fit.model,
            "term": names,
            "estimate": fit.result.params[names].values,
            "se": fit.result.bse[names].values,
            "ci_low": ci.iloc[:, 0].values,
            "ci_high": ci.iloc[:, 1].values,
            "p_value": fit.result.pvalues[names].values,
            "n_obs": int(fit.result.nobs),
            "n_subjects": fit.data[SUBJECT].nunique(),
        }
    )


def _contrast(fit: Fit, weights: dict[str, float], alpha: float) -> tuple[float, float, float, float]:
    """Estimate, CI and p of a linear combination of fixed effects (statsmodels t_test)."""
    vector = np.array([weights.get(name, 0.0) for name in _fe_names(fit)])
    test = fit.result.t_test(vector[None, :])
    low, high = np.asarray(test.conf_int(alpha)).ravel()
    return float(np.ravel(test.effect)[0]), float(low), float(high), float(np.ravel(test.pvalue)[0])


def group_slope_terms(group: str, groups: list[str]) -> dict[str, float]:
    """Weights of the fixed effects whose sum is the group's change per year."""
    weights = {TIME: 1.0}
    if len(groups) >= 2 and group != groups[0]:
        weights[f"{TIME}:C(group)[T.{group}]"] = 1.0
    return weights


def annual_change(fit: Fit, groups: list[str], alpha: float) -> pd.DataFrame:
    """Change per year in each group, with CI, also in % of the group's observed baseline mean."""
    rows = []
    baseline = fit.data[fit.data[TIME] == 0]
    for group in groups or ["all"]:
        estimate, low, high, p = _contrast(fit, group_slope_terms(group, groups), alpha)
        base = baseline.loc[baseline["group"] == group, fit.measure] if groups else baseline[fit.measure]
        mean = float(base.mean()) if len(base) else math.nan
        rows.append(
            {
                "measure": fit.measure,
                "group": group,
                "model": fit.model,
                "change_per_year": estimate,
                "ci_low": low,
                "ci_high": high,
                "p_value": p,
                "baseline_mean": mean,
                "change_pct_per_year": 100 * estimate / mean,
                "ci_low_pct": 100 * low / mean,
                "ci_high_pct": 100 * high / mean,
            }
        )
    return pd.DataFrame(rows)


def baseline_differences(data: pd.DataFrame, groups: list[str], measures: list[str]) -> pd.DataFrame:
    """Each group against the reference at the first visit: means, difference, Hedges' g and Welch's
    t-test (pingouin)."""
    import pingouin as pg

    baseline = data[data[TIME] == 0]
    rows = []
    for measure in measures:
        ref = baseline.loc[baseline["group"] == groups[0], measure].dropna()
        for group in groups[1:]:
            other = baseline.loc[baseline["group"] == group, measure].dropna()
            row = {
                "measure": measure,
                "group": group,
                "reference": groups[0],
                "n": len(other),
                "mean": other.mean(),
                "sd": other.std(),
                "n_reference": len(ref),
                "mean_reference": ref.mean(),
                "sd_reference": ref.std(),
                "difference": other.mean() - ref.mean(),
                "hedges_g": math.nan,
                "p_value": math.nan,
            }
            if len(other) >= 2 and len(ref) >= 2:
                row["hedges_g"] = float(pg.compute_effsize(other, ref, paired=False, eftype="hedges"))
                row["p_value"] = float(pg.ttest(other, ref, correction=True)["p_val"].iloc[0])
            rows.append(row)
    return pd.DataFrame(rows)


def subject_slopes(data: pd.DataFrame, measures: list[str]) -> pd.DataFrame:
    """Each subject's own least-squares change per year (subjects with two or more visits)."""
    rows = []
    for (subject, group), visits in data.groupby([SUBJECT, "group"], dropna=False):
        for measure in measures:
            v = visits[[TIME, measure]].dropna()
            if v[TIME].nunique() >= 2:
                slope = float(np.polyfit(v[TIME], v[measure], 1)[0])
                rows.append(
                    {
                        "participant_id": subject,
                        "group": group,
                        "measure": measure,
                        "n_visits": len(v),
                        "span_years": float(v[TIME].max() - v[TIME].min()),
                        "slope_per_year": slope,
                    }
                )
    return pd.DataFrame(
        rows, columns=["participant_id", "group", "measure", "n_visits", "span_years", "slope_per_year"]
    )


def participants_per_arm(effect_size: float, alpha: float, power: float) -> float:
    """statsmodels' two-sample t-test sample size; 2 when even two per arm reach the power (the solver
    does not converge below that), NaN when it finds no answer."""
    from statsmodels.stats.power import TTestIndPower

    analysis = TTestIndPower()
    if analysis.power(effect_size=effect_size, nobs1=2, alpha=alpha, alternative="two-sided") >= power:
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = analysis.solve_power(effect_size=effect_size, alpha=alpha, power=power, alternative="two-sided")
    return math.ceil(n) if np.isfinite(n) else math.nan


def sample_size(changes: pd.DataFrame, slopes: pd.DataFrame, groups: list[str], settings: Settings) -> pd.DataFrame:
    """Participants per arm to detect a slowing of each patient group's excess annual change (over the
    reference group's) by the configured fractions: two-sample t-test on per-subject slopes
    (statsmodels TTestIndPower), two-sided, at ``alpha`` and ``power``."""
    rows = []
    for measure, per_measure in changes.groupby("measure", sort=False):
        rate = dict(zip(per_measure["group"], per_measure["change_per_year"]))
        for group in groups[1:]:
            excess = rate[group] - rate[groups[0]]
            sd = slopes.loc[(slopes["measure"] == measure) & (slopes["group"] == group), "slope_per_year"].std()
            for fraction in settings.slowing:
                delta = abs(fraction * excess)
                n = math.nan
                if np.isfinite(sd) and sd > 0 and delta > 0:
                    n = participants_per_arm(delta / sd, settings.alpha, settings.power)
                rows.append(
                    {
                        "measure": measure,
                        "group": group,
                        "reference": groups[0],
                        "excess_change_per_year": excess,
                        "slowing": fraction,
                        "detectable_difference": delta,
                        "slope_sd": sd,
                        "alpha": settings.alpha,
                        "power": settings.power,
                        "n_per_arm": n,
                    }
                )
    return pd.DataFrame(rows)


#: The columns of every statistics table, so that a table with no rows (too few groups, nothing
#: modelled) is still a TSV with its header that any reader can open.
TABLE_COLUMNS: dict[str, list[str]] = {
    "fixed_effects": [
        "measure",
        "model",
        "term",
        "estimate",
        "se",
        "ci_low",
        "ci_high",
        "p_value",
        "n_obs",
        "n_subjects",
    ],
    "annual_change": [
        "measure",
        "group",
        "model",
        "change_per_year",
        "ci_low",
        "ci_high",
        "p_value",
        "baseline_mean",
        "change_pct_per_year",
        "ci_low_pct",
        "ci_high_pct",
    ],
    "baseline_differences": [
        "measure",
        "group",
        "reference",
        "n",
        "mean",
        "sd",
        "n_reference",
        "mean_reference",
        "sd_reference",
        "difference",
        "hedges_g",
        "p_value",
    ],
    "subject_slopes": ["participant_id", "group", "measure", "n_visits", "span_years", "slope_per_year"],
    "sample_size": [
        "measure",
        "group",
        "reference",
        "excess_change_per_year",
        "slowing",
        "detectable_difference",
        "slope_sd",
        "alpha",
        "power",
        "n_per_arm",
    ],
    "dropped_rows": ["participant_id", "session_id", "measure", "missing"],
    "models": ["measure", "model", "formula", "converged", "n_obs", "n_subjects", "segmentation_mode", "messages"],
}


def _with_header(name: str, table: pd.DataFrame) -> pd.DataFrame:
    return table if len(table.columns) else pd.DataFrame(columns=TABLE_COLUMNS[name])


@dataclass
class Analysis:
    fits: list[Fit]
    groups: list[str]
    notes: list[str]
    tables: dict[str, pd.DataFrame]


def analyse(table: pd.DataFrame, settings: Settings, ratings: pd.DataFrame | None = None) -> Analysis:
    """Everything the statistics rule writes, from the cohort table and the QC ratings."""
    data, notes = analysis_table(table, ratings, settings.exclude_review, settings.image_entities)
    groups, group_notes = usable_groups(data, settings)
    notes += group_notes
    measures = [m for m in MEASURES if m in data and data[m].notna().any()]
    attempted = [fit_measure(data, m, settings, groups) for m in measures]
    for fit in attempted:
        notes += [f"{fit.measure}: {m}" for m in fit.messages]
    mode = (
        ", ".join(sorted(set(data["segmentation_mode"].dropna().astype(str).str.split(" ").str[0])))
        if "segmentation_mode" in data
        else ""
    )
    if mode:
        notes.append(f"measures from the {mode} segmentation (config longitudinal.enabled)")
    models = pd.DataFrame(
        [
            {
                "measure": f.measure,
                "model": f.model,
                "formula": f.formula,
                "converged": f.converged,
                "n_obs": len(f.data),
                "n_subjects": f.data[SUBJECT].nunique(),
                "segmentation_mode": mode,
                "messages": " | ".join(f.messages),
            }
            for f in attempted
        ],
        columns=["measure", "model", "formula", "converged", "n_obs", "n_subjects", "segmentation_mode", "messages"],
    )
    fits = [fit for fit in attempted if fit.result is not None]
    if not fits:
        notes.append("no measure could be modelled")
        empty = {
            name: pd.DataFrame()
            for name in ("fixed_effects", "annual_change", "baseline_differences", "subject_slopes", "sample_size")
        }
        dropped = pd.concat([f.dropped for f in attempted], ignore_index=True) if attempted else pd.DataFrame()
        tables = {**empty, "dropped_rows": dropped, "models": models}
        return Analysis([], groups, notes, {name: _with_header(name, t) for name, t in tables.items()})
    modelled = data[data["group"].isin(groups)] if len(groups) >= 2 else data
    changes = pd.concat([annual_change(f, groups, settings.alpha) for f in fits], ignore_index=True)
    slopes = subject_slopes(modelled, measures)
    tables = {
        "fixed_effects": pd.concat([fixed_effects(f, settings.alpha) for f in fits], ignore_index=True),
        "annual_change": changes,
        "baseline_differences": baseline_differences(modelled, groups, measures)
        if len(groups) >= 2
        else pd.DataFrame(),
        "subject_slopes": slopes,
        "sample_size": sample_size(changes, slopes, groups, settings) if len(groups) >= 2 else pd.DataFrame(),
        "dropped_rows": pd.concat([f.dropped for f in attempted], ignore_index=True),
        "models": models,
    }
    return Analysis(fits, groups, notes, {name: _with_header(name, t) for name, t in tables.items()})


#: Column descriptions for the JSON sidecars of the statistics tables.
COLUMN_DOCS: dict[str, str] = {
    "segmentation_mode": "which labels the measures come from: cross-sectional (each visit on its own) or "
    "longitudinal (each visit with its subject's template prior)",
    "measure": "cohort-table column modelled",
    "model": "model fitted (fallbacks say why)",
    "term": "fixed-effect term",
    "estimate": "estimate (measure units; per year for terms with 'years')",
    "se": "standard error",
    "ci_low": "lower bound of the 95% confidence interval (1 - alpha)",
    "ci_high": "upper bound of the confidence interval",
    "p_value": "two-sided p-value",
    "n_obs": "sessions in the model",
    "n_subjects": "participants in the model",
    "group": "participant group",
    "change_per_year": "modelled change per year in the group (measure units)",
    "baseline_mean": "observed mean at the first visit in the group",
    "change_pct_per_year": "change per year in % of the group's baseline mean",
    "ci_low_pct": "lower CI bound in % of the baseline mean",
    "ci_high_pct": "upper CI bound in % of the baseline mean",
    "reference": "reference group",
    "n": "participants with a baseline value",
    "mean": "baseline mean",
    "sd": "baseline SD",
    "n_reference": "reference participants",
    "mean_reference": "reference baseline mean",
    "sd_reference": "reference SD",
    "difference": "group mean minus reference mean at baseline",
    "hedges_g": "Hedges' g effect size (pingouin)",
    "participant_id": "BIDS participant label",
    "session_id": "BIDS session label",
    "n_visits": "visits with a value",
    "span_years": "years between first and last visit",
    "slope_per_year": "the participant's own least-squares change per year",
    "excess_change_per_year": "group's annual change minus the reference group's",
    "slowing": "fraction of the excess change a treatment should remove",
    "detectable_difference": "difference in annual change to detect (slowing x |excess|)",
    "slope_sd": "SD of per-subject slopes in the group",
    "alpha": "two-sided significance level",
    "power": "power",
    "n_per_arm": "participants per arm (two-sample t-test on slopes, statsmodels TTestIndPower)",
    "missing": "model columns with missing values",
    "formula": "model formula (patsy)",
    "converged": "whether the reported model converged",
    "messages": "what happened while fitting",
}


def sidecar(table: pd.DataFrame, notes: list[str] | None = None) -> dict[str, Any]:
    doc = {column: {"Description": COLUMN_DOCS.get(column, column)} for column in table.columns}
    if notes is not None:
        doc["notes"] = {"Description": "what the analysis left out or changed, and why", "Levels": notes}
    return doc
