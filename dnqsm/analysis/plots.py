"""Figures of the longitudinal statistics (matplotlib): spaghetti plots with the model fit, baseline
distributions, left-right agreement and residual diagnostics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as sps  # noqa: E402

from dnqsm.analysis.stats import MEASURES, SUBJECT, TIME, Analysis, Fit  # noqa: E402
from dnqsm.qc.views import save_figure  # noqa: E402

GROUP_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _label(measure: str) -> str:
    name, unit = MEASURES[measure]
    return f"{name} ({unit})"


def _colour(groups: list[str], group) -> str:
    return GROUP_COLOURS[groups.index(group) % len(GROUP_COLOURS)] if group in groups else "#7f7f7f"


def population_line(fit: Fit, group: str | None, times: np.ndarray) -> np.ndarray:
    """Model prediction (fixed effects only) over ``times``, averaged over the group's own rows so
    covariates take the group's observed mix."""
    rows = fit.data if group is None else fit.data[fit.data["group"] == group]
    out = []
    for t in times:
        grid = rows.assign(**{TIME: t})
        out.append(float(np.mean(fit.result.predict(grid))))
    return np.array(out)


def nothing_to_show(path: str | Path, why: str) -> Path:
    """A figure that says why it is empty (a workflow output must exist even for an empty analysis)."""
    fig = plt.figure(figsize=(6, 1.5))
    fig.text(0.5, 0.5, why, ha="center", va="center", fontsize=10)
    return save_figure(fig, path, dpi=110)


def spaghetti(analysis: Analysis, path: str | Path) -> Path:
    """Each measure over years since baseline: one line per subject, the model's group trajectory bold."""
    fits = analysis.fits
    if not fits:
        return nothing_to_show(path, "no model could be fitted: see stats/models.json")
    groups = analysis.groups or [None]
    fig, axes = plt.subplots(len(fits), len(groups), figsize=(4.2 * len(groups), 2.9 * len(fits)), squeeze=False)
    for row, fit in zip(axes, fits):
        span = np.linspace(0, max(float(fit.data[TIME].max()), 0.1), 20)
        for ax, group in zip(row, groups):
            part = fit.data if group is None else fit.data[fit.data["group"] == group]
            colour = _colour(analysis.groups, group)
            for _, visits in part.groupby(SUBJECT):
                visits = visits.sort_values(TIME)
                ax.plot(visits[TIME], visits[fit.measure], "-o", color=colour, alpha=0.35, lw=1, ms=3)
            ax.plot(span, population_line(fit, group, span), color=colour, lw=2.5, label="model fit")
            ax.set_title(f"{group or 'all'}: {MEASURES[fit.measure][0]}", fontsize=9)
            ax.set_xlabel("years since baseline", fontsize=8)
            ax.set_ylabel(_label(fit.measure), fontsize=8)
            ax.tick_params(labelsize=7)
        # the same y range across groups so slopes compare by eye
        limits = [ax.get_ylim() for ax in row]
        for ax in row:
            ax.set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
    fig.suptitle("Per-subject trajectories and the mixed model's group fit", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=110)


def baseline(analysis: Analysis, data: pd.DataFrame, path: str | Path) -> Path:
    """Distributions of each measure at the first visit, per group (box plot with every subject)."""
    if not analysis.fits:
        return nothing_to_show(path, "no data to show: see stats/models.json")
    measures = [f.measure for f in analysis.fits]
    groups = analysis.groups or sorted(data["group"].dropna().unique())
    first = data[data[TIME] == 0]
    fig, axes = plt.subplots(2, int(np.ceil(len(measures) / 2)), figsize=(12, 6.5), squeeze=False)
    for ax, measure in zip(axes.ravel(), measures):
        values = [first.loc[first["group"] == g, measure].dropna().to_numpy() for g in groups]
        ax.boxplot(values, showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), groups)
        for i, (group, v) in enumerate(zip(groups, values), start=1):
            jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(len(v))
            ax.scatter(i + jitter, v, color=_colour(groups, group), s=18, zorder=3)
        ax.set_title(_label(measure), fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(measures) :]:
        ax.axis("off")
    fig.suptitle("Baseline distributions per group", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=110)


def left_right(data: pd.DataFrame, groups: list[str], path: str | Path) -> Path:
    """Left against right volume and mean χ for every session, with Pearson r and the identity line."""
    if data is None or data.empty:
        return nothing_to_show(path, "no data to show: see stats/models.json")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (left, right) in zip(
        axes, (("left_volume_mm3", "right_volume_mm3"), ("left_chi_mean_ppb", "right_chi_mean_ppb"))
    ):
        pair = data[[left, right, "group"]].dropna(subset=[left, right])
        for group, part in pair.groupby("group", dropna=False, observed=True):
            ax.scatter(part[left], part[right], s=20, color=_colour(groups, group), label=str(group))
        if len(pair) >= 3:
            r, p = sps.pearsonr(pair[left], pair[right])
            ax.text(0.04, 0.94, f"r = {r:.2f} (n = {len(pair)})", transform=ax.transAxes, fontsize=9, va="top")
        if len(pair):
            lo, hi = float(pair[[left, right]].min().min()), float(pair[[left, right]].max().max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(_label(left), fontsize=9)
        ax.set_ylabel(_label(right), fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Left versus right dentate, every session", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=110)


def residuals(analysis: Analysis, path: str | Path) -> Path:
    """Residuals against fitted values and a normal Q-Q plot for each measure's model."""
    fits = analysis.fits
    if not fits:
        return nothing_to_show(path, "no model could be fitted: see stats/models.json")
    fig, axes = plt.subplots(len(fits), 2, figsize=(9, 2.6 * len(fits)), squeeze=False)
    for (scatter_ax, qq_ax), fit in zip(axes, fits):
        fitted, resid = np.asarray(fit.result.fittedvalues), np.asarray(fit.result.resid)
        scatter_ax.scatter(fitted, resid, s=12, color="#444444")
        scatter_ax.axhline(0, color="k", lw=0.8)
        scatter_ax.set_title(f"{MEASURES[fit.measure][0]}: residuals vs fitted", fontsize=9)
        scatter_ax.tick_params(labelsize=7)
        sps.probplot(resid, dist="norm", plot=qq_ax)
        qq_ax.set_title(f"{MEASURES[fit.measure][0]}: normal Q-Q", fontsize=9)
        qq_ax.tick_params(labelsize=7)
        qq_ax.set_xlabel("theoretical quantiles", fontsize=8)
        qq_ax.set_ylabel("residuals", fontsize=8)
    fig.suptitle("Residual diagnostics of the mixed models", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=110)


def bland_altman(sessions: pd.DataFrame, path: str | Path) -> Path:
    """Bland-Altman plots of dentate volume, automatic against manual, per side."""
    from dnqsm.analysis.agreement import bland_altman as limits

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, side in zip(axes, ("left", "right")):
        ok = sessions.dropna(subset=[f"{side}_dice"])
        auto, manual = ok[f"{side}_volume_mm3"].to_numpy(), ok[f"{side}_manual_volume_mm3"].to_numpy()
        ax.scatter((auto + manual) / 2, auto - manual, s=20, color="#1f77b4")
        if len(ok) >= 2:
            lim = limits(auto, manual)
            for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
                ax.axhline(lim[key], color="k", ls=style, lw=0.9)
            ax.text(
                0.02,
                0.96,
                f"bias {lim['bias']:+.0f} mm³, limits {lim['loa_low']:+.0f} to {lim['loa_high']:+.0f}",
                transform=ax.transAxes,
                fontsize=8,
                va="top",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            )
        ax.set_xlabel("mean of automatic and manual volume (mm³)", fontsize=9)
        ax.set_ylabel("automatic − manual (mm³)", fontsize=9)
        ax.set_title(f"{side} dentate (n = {len(ok)})", fontsize=10)
    fig.suptitle("Bland-Altman: dentate volume against manual labels", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path, dpi=110)


def method_dice(sessions: pd.DataFrame, path: str | Path) -> Path:
    """Dice per session of each method against manual labels, per side; lines join a session's
    results across methods (the paired comparison the table tests)."""
    from dnqsm.analysis.agreement import METHOD_NAMES, method_order

    methods = method_order(sessions)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), sharey=True)
    key = ["participant_id", "session_id"]
    for ax, side in zip(axes, ("left", "right")):
        wide = sessions.pivot_table(index=key, columns="method", values=f"{side}_dice", dropna=False)
        wide = wide.reindex(columns=methods)
        x = np.arange(len(methods))
        for values in wide.to_numpy():
            ax.plot(x, values, color="0.75", lw=0.8, zorder=1)
        for i, method in enumerate(methods):
            values = wide[method].dropna().to_numpy()
            ax.scatter(np.full(len(values), i), values, s=18, color=_colour(methods, method), zorder=2)
            if len(values):
                ax.errorbar(
                    i + 0.18,
                    values.mean(),
                    yerr=values.std(ddof=1) if len(values) > 1 else 0,
                    fmt="o",
                    color="k",
                    capsize=4,
                    ms=5,
                    zorder=3,
                )
                ax.text(i + 0.26, values.mean(), f"{values.mean():.2f}", fontsize=8, va="center")
        ax.set_xticks(x, [METHOD_NAMES.get(m, m).replace(" (", "\n(") for m in methods], fontsize=8)
        ax.set_xlim(-0.5, len(methods) - 0.3)
        ax.set_title(f"{side} dentate (n = {len(wide)})", fontsize=10)
        ax.grid(axis="y", color="0.9")
    axes[0].set_ylabel("Dice with manual labels")
    fig.suptitle("Dice per session by method (lines join the same session; black: mean ± SD)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path, dpi=110)
