"""Longitudinal statistics: planted effects recovered, equal to statsmodels called directly, messy data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from truth_helpers import calibrated_chi

from dnqsm.analysis.stats import Settings, analyse, sample_size
from dnqsm.io import read_tsv
from dnqsm.synth.cohort import DEFAULT_EFFECTS

TRUTH = "derivatives/manual"


def truth_as_cohort_table(root) -> pd.DataFrame:
    """The synthetic truth in the cohort table's shape (what a perfect segmentation would measure)."""
    truth = read_tsv(root / TRUTH / "truth.tsv")
    table = truth[
        ["participant_id", "session_id", "group", "sex", "baseline_age", "site", "years_since_baseline"]
    ].copy()
    table["status"] = "ok"
    for side in ("left", "right"):
        table[f"{side}_volume_mm3"] = truth[f"dn_{side}_volume_mm3"]
        table[f"{side}_chi_mean_ppb"] = calibrated_chi(truth, side)
        table[f"{side}_chi_mass_ppb_mm3"] = table[f"{side}_chi_mean_ppb"] * table[f"{side}_volume_mm3"]
    table["total_volume_mm3"] = table.left_volume_mm3 + table.right_volume_mm3
    table["total_chi_mass_ppb_mm3"] = table.left_chi_mass_ppb_mm3 + table.right_chi_mass_ppb_mm3
    return table, truth


def planted_volume_interaction(truth: pd.DataFrame, side: str) -> float:
    """Planted group x time effect on volume in mm^3/year: each subject's planted baseline volume (group
    offset included) times its group's planted % change per year, averaged per group, ataxia minus
    control."""
    offset = 1 + truth["group"].map({g: e.volume_offset_pct / 100 for g, e in DEFAULT_EFFECTS.items()})
    base = (
        (truth[f"dn_{side}_volume_mm3"] / truth[f"dn_{side}_planted_volume_factor"] * offset)
        .groupby(truth.participant_id)
        .mean()
    )
    group = truth.groupby("participant_id")["group"].first()
    rate = group.map({g: DEFAULT_EFFECTS[g].volume_pct_per_year / 100 for g in ("control", "ataxia")})
    per_subject = base * rate
    return float(per_subject[group == "ataxia"].mean() - per_subject[group == "control"].mean())


@pytest.fixture(scope="module")
def planted(demo_cohort):  # 8 participants (control, ataxia) x 3 visits, seed 7
    table, truth = truth_as_cohort_table(demo_cohort)
    return table, truth, analyse(table, Settings(covariates=["baseline_age", "sex"]))


def test_group_by_time_effects_cover_the_planted_values(planted):
    table, truth, analysis = planted
    fixed = analysis.tables["fixed_effects"].set_index(["measure", "term"])
    term = "years:C(group)[T.ataxia]"
    tissue = DEFAULT_EFFECTS["ataxia"].chi_ppb_per_year - DEFAULT_EFFECTS["control"].chi_ppb_per_year
    for side in ("left", "right"):
        # The measured chi moves by the planted tissue change times what partial volume and the
        # site's calibration leave of it; that factor is read off the same truth (measured against
        # planted chi over all sessions).
        factor = np.polyfit(truth[f"dn_{side}_planted_chi_ppb"], table[f"{side}_chi_mean_ppb"], 1)[0]
        assert 0.7 < factor < 1.3
        chi = tissue * factor
        row = fixed.loc[(f"{side}_chi_mean_ppb", term)]
        assert row.ci_low <= chi <= row.ci_high, (side, row.estimate, row.ci_low, row.ci_high)
        volume = planted_volume_interaction(truth, side)
        row = fixed.loc[(f"{side}_volume_mm3", term)]
        assert row.ci_low <= volume <= row.ci_high, (side, volume, row.estimate, row.ci_low, row.ci_high)
        assert row.estimate < 0


def test_numbers_equal_statsmodels_called_directly(planted):
    table, _, analysis = planted
    fit = next(f for f in analysis.fits if f.measure == "left_chi_mean_ppb")
    data = table.assign(years=table.years_since_baseline)
    data["group"] = pd.Categorical(data["group"], categories=["control", "ataxia"])
    re_formula = "~years" if "slope" in fit.model.split("(")[0] else "~1"
    direct = smf.mixedlm(
        "left_chi_mean_ppb ~ years * C(group) + baseline_age + C(sex)",
        data,
        groups=data["participant_id"],
        re_formula=re_formula,
    ).fit(reml=True)
    fixed = analysis.tables["fixed_effects"].query("measure == 'left_chi_mean_ppb'").set_index("term")
    for term in direct.fe_params.index:
        assert fixed.loc[term, "estimate"] == pytest.approx(direct.fe_params[term], abs=1e-9)
        assert fixed.loc[term, "p_value"] == pytest.approx(direct.pvalues[term], rel=1e-6)
        assert fixed.loc[term, "ci_low"] == pytest.approx(direct.conf_int().loc[term, 0], abs=1e-9)
    change = analysis.tables["annual_change"].query("measure == 'left_chi_mean_ppb'").set_index("group")
    assert change.loc["control", "change_per_year"] == pytest.approx(direct.fe_params["years"], abs=1e-9)
    assert change.loc["ataxia", "change_per_year"] == pytest.approx(
        direct.fe_params["years"] + direct.fe_params["years:C(group)[T.ataxia]"], abs=1e-9
    )


def test_messy_cohort_one_visit_subjects_missing_covariates_small_group(planted):
    table, _, _ = planted
    messy = table.copy()
    first = messy.participant_id.iloc[0]
    messy = messy[(messy.participant_id != first) | (messy.session_id == "ses-01")]  # a one-visit subject
    messy.loc[messy.index[3], "sex"] = np.nan  # a missing covariate
    lonely = messy[messy.participant_id == messy.participant_id.iloc[-1]].assign(group="ms")
    messy = pd.concat([messy[messy.participant_id != lonely.participant_id.iloc[0]], lonely])  # 1-subject group
    analysis = analyse(messy, Settings(covariates=["baseline_age", "sex"]))
    assert any("group 'ms' has 1 subject(s)" in n for n in analysis.notes)
    dropped = analysis.tables["dropped_rows"]
    assert set(dropped.missing) == {"sex"} and dropped.session_id.nunique() == 1
    models = analysis.tables["models"].set_index("measure")
    assert models.loc["left_volume_mm3", "n_subjects"] == messy[messy.group != "ms"].participant_id.nunique()
    assert models.loc["left_volume_mm3", "n_obs"] == (messy.group != "ms").sum() - 1


def test_non_convergence_is_reported_and_a_simpler_model_labelled():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):  # no subject effect at all: every random-effect variance sits on its boundary
        group = "control" if i % 2 else "ataxia"
        for t in (0.0, 1.0, 2.0):
            rows.append(
                {
                    "participant_id": f"sub-{i:02d}",
                    "session_id": f"ses-{int(t) + 1}",
                    "group": group,
                    "years_since_baseline": t,
                    "status": "ok",
                    "left_volume_mm3": 1000 + 30 * rng.standard_normal() - 10 * t,
                }
            )
    analysis = analyse(pd.DataFrame(rows), Settings(covariates=[]))
    model = analysis.tables["models"].set_index("measure").loc["left_volume_mm3"]
    assert model.model.startswith("OLS with subject-clustered errors (fallback") and not model.converged
    assert "random intercept and slope did not converge" in model.messages
    assert "mixed: random intercept did not converge" in model.messages
    assert any("did not converge" in n for n in analysis.notes)
    assert analysis.tables["annual_change"].change_per_year.notna().all()


def test_sample_size_known_answer():
    """Effect size 0.5 at alpha 0.05 and power 0.8 needs 64 per arm (two-sample t-test)."""
    changes = pd.DataFrame({"measure": ["m", "m"], "group": ["control", "ataxia"], "change_per_year": [0.0, -4.0]})
    slopes = pd.DataFrame({"measure": "m", "group": "ataxia", "slope_per_year": [-4 - 4.0, -4 + 4.0, -4.0]})
    # slope SD = 4 ; slowing 0.5 of an excess of -4 => 2 ; effect size 2 / 4 = 0.5
    table = sample_size(changes, slopes, ["control", "ataxia"], Settings(slowing=[0.5]))
    assert table.n_per_arm.tolist() == [64] and math.isclose(table.slope_sd.iloc[0], 4.0)


def test_review_sessions_are_included_and_listed_unless_excluded_and_ratings_override(planted):
    table, _, _ = planted
    table = table.copy()
    table["failed_stage"] = None
    first, second, third = table.index[:3]
    table.loc[[first, second], "status"] = "review"
    table.loc[third, ["status", "failed_stage"]] = ["failed", "preprocess"]

    def key(i):
        return f"{table.participant_id[i]}_{table.session_id[i]}"

    settings = Settings(covariates=["baseline_age", "sex"])
    included = analyse(table, settings)
    assert len(included.fits[0].data) == len(table) - 1
    assert any("2 session(s) included whose segmentation needs review" in n and key(first) in n for n in included.notes)
    assert "1 session(s) left out: failed in preprocess" in included.notes
    ratings = pd.DataFrame(
        {
            "participant_id": [table.participant_id[second], table.participant_id[third + 1]],
            "session_id": [table.session_id[second], table.session_id[third + 1]],
            "rating": ["pass", "fail"],
            "comment": ["", ""],
        }
    )
    excluded = analyse(table, Settings(covariates=["baseline_age", "sex"], exclude_review=True), ratings)
    assert len(excluded.fits[0].data) == len(table) - 3  # failed, review (not rated pass), rated fail
    assert any("1 session(s) left out: segmentation needs review" in n and key(first) in n for n in excluded.notes)
    assert any("1 session(s) under review kept: rated pass in QC" in n for n in excluded.notes)
    assert any("rated fail in QC" in n for n in excluded.notes)


def test_tables_without_rows_keep_their_header(planted, tmp_path):
    from dnqsm.io import write_tsv

    table, _, _ = planted
    one_group = table[table.group == "control"]
    analysis = analyse(one_group, Settings(covariates=["baseline_age", "sex"]))
    for name in ("baseline_differences", "sample_size"):
        path = write_tsv(tmp_path / f"{name}.tsv", analysis.tables[name])
        read = read_tsv(path)
        assert len(read) == 0 and "measure" in read.columns, name


def test_sessions_with_several_images_count_once():
    from dnqsm.analysis.stats import one_image_per_session

    table = pd.DataFrame(
        {
            "participant_id": ["sub-1", "sub-1", "sub-1", "sub-2"],
            "session_id": ["ses-1", "ses-1", "ses-2", "ses-1"],
            "image_entities": ["rec-tkd", "rec-l2", "rec-tkd", "rec-tkd"],
            "left_volume_mm3": [1.0, 2.0, 3.0, 4.0],
        }
    )
    first, notes = one_image_per_session(table, None)
    assert list(first.image_entities) == ["rec-l2", "rec-tkd", "rec-tkd"] and len(notes) == 1
    assert "sub-1_ses-1_rec-tkd" in notes[0] and "set stats.image_entities" in notes[0]
    chosen, notes = one_image_per_session(table, "rec-tkd")
    assert list(chosen.left_volume_mm3) == [1.0, 3.0, 4.0] and "sub-1_ses-1_rec-l2" in notes[0]
    single = table.drop(index=1)
    assert one_image_per_session(single, None)[0].equals(single), "one image per session: nothing to choose"
