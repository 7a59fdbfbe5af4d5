"""How well each search metric ranks architectures by their measured robustness.

Input: a metric-validation study's table (``rnas_lib.metric_validation``, one row per architecture
and seed). A *predictor* p is a search metric at one moment (``r_cb_radius_short``: R_CB's radius
objective after the short training) or a cheap proxy (``params``, ``skip_connections``); a *target*
T is what the trained network measured (clean, PGD accuracy, certified radius).

DSRNA's premise is that a larger R means a more robust trained network: p and T **concordant**.
Across the architectures, Kendall's τ_b(p, T) is the probability that a random pair of architectures
is ordered alike by p and T minus the probability that it is ordered oppositely (no ties); Spearman's
ρ is the correlation of their ranks (``rnas_lib.rank_statistics``). Each comes with a percentile
bootstrap interval over architectures. A predictor *supports* the premise for T when the whole
interval of τ lies above 0, *contradicts* it when the whole interval lies below 0, and is
*undecided* otherwise. With many (p, T) pairs some intervals exclude 0 by chance alone (about
(1 − level) of them where no predictor carries information): the conclusion states the count.
"""
from __future__ import annotations

import numpy as np

from .metric_validation import METRICS, MOMENTS, PROXIES, TARGETS
from .rank_statistics import correlation_table

METRIC_LABELS = {"r_cb_margin": "R_CB margin", "cb_margin_bound": "margin bound", "r_cb_radius": "R_CB radius",
                 "r_j_projection": "R_J projection", "r_j_exact": "R_J exact"}
MOMENT_LABELS = {"init": "at init", "short": "after short training"}
PROXY_LABELS = {"params": "parameters", "skip_connections": "skip connections"}
TARGET_LABELS = {"clean_acc": "clean accuracy", "pgd_linf_acc": "PGD ℓ∞ accuracy", "pgd_l2_acc": "PGD ℓ2 accuracy",
                 "cert_radius_linf": "certified radius ℓ∞", "cert_radius_l2": "certified radius ℓ2"}
VERDICTS = ("supports", "contradicts", "undecided")
#: below this many architectures the conclusion warns that its intervals mean nothing
FEW_ARCHITECTURES = 20


def search_predictors() -> list[str]:
    """Every search metric at every moment: ``<metric>_<moment>``."""
    return [f"{m}_{moment}" for moment in MOMENTS for m in METRICS]


def label(column: str) -> str:
    """A readable name of a predictor or target column."""
    if column in TARGET_LABELS:
        return TARGET_LABELS[column]
    if column in PROXY_LABELS:
        return PROXY_LABELS[column]
    metric, _, moment = column.rpartition("_")
    if metric not in METRIC_LABELS or moment not in MOMENT_LABELS:
        raise ValueError(f"{column!r} is neither a search metric, a proxy nor a target of a metric-validation table")
    return f"{METRIC_LABELS[metric]} {MOMENT_LABELS[moment]}"


def correlations(table, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Spearman ρ and Kendall τ_b with bootstrap intervals of every (predictor, target) pair across the
    table's architectures (seeds averaged first), with columns ``kind`` (search metric | proxy) and
    ``verdict`` (from τ's interval, see the module docstring)."""
    means = per_architecture(table)
    out = correlation_table(means, search_predictors() + list(PROXIES), list(TARGETS), n_boot, level, seed)
    out.insert(1, "kind", np.where(out["predictor"].isin(PROXIES), "proxy", "search metric"))
    out["verdict"] = [verdict(low, high) for low, high in zip(out["kendall_low"], out["kendall_high"])]
    return out


def verdict(low: float, high: float) -> str:
    """"supports" (interval above 0), "contradicts" (below 0) or "undecided" (holds 0, or undefined)."""
    if low > 0:
        return "supports"
    if high < 0:
        return "contradicts"
    return "undecided"


def per_architecture(table):
    """One row per architecture (its seeds averaged), the columns the correlations use, plus ``source``."""
    missing = [c for c in ["arch", "source", *search_predictors(), *PROXIES, *TARGETS] if c not in table.columns]
    if missing:
        raise ValueError(f"not a metric-validation table: it lacks {missing} (aggregate a kind: metric_validation study)")
    columns = search_predictors() + list(PROXIES) + list(TARGETS)
    means = table.groupby("arch", sort=False)[columns].mean()
    return means.join(table.groupby("arch", sort=False)["source"].first()).reset_index()


def moment_agreement(table):
    """Per search metric: Spearman ρ between its values at initialisation and after the short training
    across architectures (does a few epochs' training reorder the cells?)."""
    import pandas as pd

    from .rank_statistics import spearman

    means = per_architecture(table)
    return pd.DataFrame([{"metric": METRIC_LABELS[m], "spearman_init_short": spearman(means[f"{m}_init"],
                                                                                     means[f"{m}_short"])}
                         for m in METRICS])


def named_cells(table, target: str):
    """The published and searched cells' ``target`` and its percentile among all architectures
    (100: the best of the sample)."""
    means = per_architecture(table)
    means["percentile"] = means[target].rank(pct=True) * 100
    return means.loc[means["source"] != "random", ["arch", "source", target, "percentile"]].reset_index(drop=True)


def conclusion(corr, level: float = 0.95) -> str:
    """A markdown summary computed from ``correlations``' table: per target, which search metrics
    support or contradict the premise, the strongest search metric against the strongest proxy, and
    how many intervals would exclude 0 by chance."""
    n_archs = int(corr["n"].max())
    search = corr[corr["kind"] == "search metric"]
    lines = [f"Over **{n_archs} architectures**, Kendall's τ between each predictor and each target with its "
             f"{level:.0%} bootstrap interval ({len(corr)} intervals: about {(1 - level) * len(corr):.0f} would "
             f"exclude 0 by chance if no predictor carried information; "
             f"{int((corr['verdict'] != 'undecided').sum())} do):", ""]
    if n_archs < FEW_ARCHITECTURES:
        lines += [f"With only {n_archs} architectures the bootstrap cannot estimate its own spread (a resample holds "
                  "a few distinct cells): the intervals below are unreliable, and nothing here is evidence.", ""]
    for target in TARGETS:
        rows = search[search["target"] == target]
        proxies = corr[(corr["kind"] == "proxy") & (corr["target"] == target)]
        best = rows.loc[rows["kendall"].idxmax()]
        proxy = proxies.loc[proxies["kendall"].abs().idxmax()]
        named = {v: ", ".join(label(p) for p in rows.loc[rows["verdict"] == v, "predictor"]) for v in VERDICTS[:2]}
        parts = [f"- **{label(target)}**: the strongest search metric is {label(best['predictor'])} "
                 f"(τ = {best['kendall']:+.2f} [{best['kendall_low']:+.2f}, {best['kendall_high']:+.2f}]); "
                 f"the strongest cheap proxy, {label(proxy['predictor'])}, has τ = {proxy['kendall']:+.2f} "
                 f"[{proxy['kendall_low']:+.2f}, {proxy['kendall_high']:+.2f}]."]
        parts.append(f" Supporting the premise: {named['supports'] or 'none'}."
                     f" Contradicting it: {named['contradicts'] or 'none'}.")
        lines.append("".join(parts))
    return "\n".join(lines)


def plot_correlations(corr, statistic: str = "kendall", ax=None):
    """Heat map of ``statistic`` (predictors × targets); a dot marks an interval that excludes 0."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    grid = corr.pivot(index="predictor", columns="target", values=statistic)
    rows = [p for p in corr["predictor"].drop_duplicates()]
    columns = [t for t in corr["target"].drop_duplicates()]
    grid = grid.loc[rows, columns]
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    sure = corr.set_index(["predictor", "target"])
    for i, p in enumerate(rows):
        for j, t in enumerate(columns):
            value, low, high = sure.loc[(p, t), [statistic, f"{statistic}_low", f"{statistic}_high"]]
            mark = "•" if low > 0 or high < 0 else ""
            ax.text(j, i, f"{value:+.2f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), [label(t) for t in columns], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [label(p) for p in rows])
    ax.set_title(f"{statistic.capitalize()} rank correlation across architectures (• interval excludes 0)")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return ax


def plot_metric_against_target(table, predictor: str, target: str, ax=None):
    """One dot per architecture (seeds averaged), coloured by source; published and searched cells named."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    means = per_architecture(table)
    for source, colour in (("random", "0.6"), ("published", "tab:blue"), ("searched", "tab:red")):
        part = means[means["source"] == source]
        ax.scatter(part[predictor], part[target], s=14 if source == "random" else 30, color=colour, label=source)
        if source != "random":
            for row in part.itertuples():
                ax.annotate(row.arch, (getattr(row, predictor), getattr(row, target)), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label(predictor))
    ax.set_ylabel(label(target))
    ax.legend(fontsize=8)
    return ax
