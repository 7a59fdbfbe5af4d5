"""Rank correlations with bootstrap confidence intervals: how well one column orders the rows like another.

For n pairs (x_i, y_i):

- **Spearman's ρ** is Pearson's correlation of the ranks (ties get the mean of the ranks they span):
  ρ = Σ (r_i − r̄)(s_i − s̄) / √(Σ (r_i − r̄)² Σ (s_i − s̄)²).
- **Kendall's τ_b** = (n_c − n_d) / √((n₀ − n_x)(n₀ − n_y)), n_c and n_d the concordant and
  discordant pairs, n₀ = n(n − 1)/2, n_x and n_y the pairs tied in x and in y.
- **Percentile bootstrap interval**: the rows are resampled with replacement ``n_boot`` times (pairs
  kept together), the statistic is recomputed on every resample, and the interval at ``level`` is
  the (1 − level)/2 and (1 + level)/2 quantiles of those values. A resample whose x or y is constant
  has no correlation and is left out of the quantiles.

Every statistic takes arrays of shape (..., n) and works along the last axis, so that all
resamples are computed at once. For a bivariate normal with correlation r the population values
are ρ = (6/π)·asin(r/2) and τ = (2/π)·asin(r) (tests check the intervals' coverage against them).
"""
from __future__ import annotations

import math

import numpy as np

STATISTICS = ("spearman", "kendall")


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim == 0:
        raise ValueError(f"x and y must be arrays of the same shape (..., n), got {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("x and y hold NaN; drop the rows without a value first (e.g. DataFrame.dropna)")
    return x, y


def rankdata(a) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given the mean of the ranks they span:
    rank_i = #{j: a_j < a_i} + (#{j: a_j = a_i} + 1)/2 (pairwise, O(n²) per row)."""
    a = np.asarray(a, dtype=float)
    below = (a[..., None, :] < a[..., :, None]).sum(-1)
    equal = (a[..., None, :] == a[..., :, None]).sum(-1)
    return below + (equal + 1) / 2


def spearman(x, y) -> np.ndarray | float:
    """Spearman's ρ along the last axis (NaN where x or y is constant)."""
    x, y = _pairs(x, y)
    r, s = rankdata(x), rankdata(y)
    r = r - r.mean(-1, keepdims=True)
    s = s - s.mean(-1, keepdims=True)
    denominator = np.sqrt((r * r).sum(-1) * (s * s).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denominator > 0, (r * s).sum(-1) / np.where(denominator > 0, denominator, 1), np.nan)
    return float(rho) if rho.ndim == 0 else rho


def kendall(x, y) -> np.ndarray | float:
    """Kendall's τ_b along the last axis (NaN where x or y is constant); O(n²) pairs."""
    x, y = _pairs(x, y)
    n = x.shape[-1]
    upper = np.triu(np.ones((n, n), bool), 1)
    sx = np.sign(x[..., :, None] - x[..., None, :])[..., upper]
    sy = np.sign(y[..., :, None] - y[..., None, :])[..., upper]
    untied_x, untied_y = (sx != 0).sum(-1), (sy != 0).sum(-1)  # n₀ − n_x, n₀ − n_y
    denominator = np.sqrt(untied_x.astype(float) * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denominator > 0, (sx * sy).sum(-1) / np.where(denominator > 0, denominator, 1), np.nan)
    return float(tau) if tau.ndim == 0 else tau


FUNCTIONS = {"spearman": spearman, "kendall": kendall}


def bootstrap_interval(x, y, statistic: str = "spearman", n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                       chunk: int = 250) -> tuple[float, float]:
    """The percentile bootstrap interval (low, high) of ``statistic`` of the pairs (x_i, y_i) at
    ``level``; NaN, NaN with fewer than 3 pairs or no resample with a defined statistic."""
    x, y = _pairs(x, y)
    if x.ndim != 1:
        raise ValueError(f"x and y must be 1-D (one value per row), got shape {x.shape}")
    if statistic not in FUNCTIONS:
        raise ValueError(f"unknown statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer ≥ 10 (resamples), got {n_boot!r}")
    n = len(x)
    if n < 3:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):  # chunks bound the memory of Kendall's (chunk, n, n) pairs
        rows = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        values.append(np.atleast_1d(FUNCTIONS[statistic](x[rows], y[rows])))
    values = np.concatenate(values)
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def correlation_table(table, predictors, targets, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """One row per (predictor, target) column pair of the DataFrame ``table``: the number of rows with
    both values, Spearman's ρ and Kendall's τ_b with their bootstrap intervals at ``level``
    (columns spearman, spearman_low, spearman_high, kendall, kendall_low, kendall_high)."""
    import pandas as pd

    missing = [c for c in [*predictors, *targets] if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table; it has {', '.join(map(str, table.columns))}")
    rows = []
    for target in targets:
        for predictor in predictors:
            pair = table[[predictor, target]].dropna()
            row = {"predictor": predictor, "target": target, "n": len(pair)}
            for name, function in FUNCTIONS.items():
                value = function(pair[predictor], pair[target]) if len(pair) >= 3 else math.nan
                low, high = bootstrap_interval(pair[predictor].to_numpy(), pair[target].to_numpy(), name, n_boot,
                                               level, seed)
                row.update({name: value, f"{name}_low": low, f"{name}_high": high})
            rows.append(row)
    columns = ["predictor", "target", "n"] + [f"{s}{part}" for s in STATISTICS for part in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=columns)
