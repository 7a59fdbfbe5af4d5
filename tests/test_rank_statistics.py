"""Rank correlations against scipy.stats, and the bootstrap interval's coverage where the truth is known."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rnas_lib.rank_statistics import bootstrap_interval, correlation_table, kendall, rankdata, spearman


def samples(n, seed, ties=False):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(size=n)
    y = 0.6 * x + 0.8 * y
    if ties:  # coarse values: many ties in both
        x, y = np.round(x), np.round(2 * y)
    return x, y


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("n", [3, 7, 60])
def test_rank_correlations_match_scipy(n, ties):
    for seed in range(5):
        x, y = samples(n, seed, ties)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        assert np.allclose(rankdata(x), stats.rankdata(x))
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)


def test_batched_rows_are_independent():
    """A (B, n) batch gives each row's own statistic (the bootstrap computes its resamples at once)."""
    rows = [samples(20, seed, ties=seed % 2 == 1) for seed in range(6)]
    X, Y = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
    assert np.allclose(spearman(X, Y), [spearman(x, y) for x, y in rows])
    assert np.allclose(kendall(X, Y), [kendall(x, y) for x, y in rows])
    assert np.allclose(rankdata(X), np.stack([stats.rankdata(x) for x, _ in rows]))


def test_constant_columns_have_no_correlation():
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    assert math.isnan(kendall([1, 2, 3, 4], [5, 5, 5, 5]))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("statistic, truth, n, reps, n_boot",
                         [("spearman", lambda r: 6 / math.pi * math.asin(r / 2), 80, 200, 400),
                          ("kendall", lambda r: 2 / math.pi * math.asin(r), 50, 120, 300)])
def test_bootstrap_interval_covers_the_population_value(statistic, truth, n, reps, n_boot):
    """Bivariate normal samples with correlation r = 0.5: the nominal 95 % intervals hold the population
    value in about 95 % of the repetitions (binomial sd ≈ 2 %; percentile intervals run slightly
    short at these n), and they are narrower for larger samples."""
    r = 0.5
    cov = [[1, r], [r, 1]]
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for rep in range(reps):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        low, high = bootstrap_interval(x, y, statistic, n_boot=n_boot, seed=rep)
        covered += low <= truth(r) <= high
        widths.append(high - low)
    assert 0.88 <= covered / reps <= 0.99, covered / reps
    x, y = rng.multivariate_normal([0, 0], cov, size=4 * n).T
    low, high = bootstrap_interval(x, y, statistic, n_boot=n_boot)
    assert high - low < 0.7 * np.mean(widths)


def test_bootstrap_interval_holds_the_estimate_and_is_reproducible():
    x, y = samples(40, 3)
    low, high = bootstrap_interval(x, y, "kendall", seed=7)
    assert low < kendall(x, y) < high
    assert (low, high) == bootstrap_interval(x, y, "kendall", seed=7)
    assert all(map(math.isnan, bootstrap_interval([1, 2], [2, 1])))


@pytest.mark.parametrize("kwargs, message", [({"statistic": "pearson"}, "unknown statistic"),
                                             ({"level": 95}, "level must be in"),
                                             ({"n_boot": 5}, "n_boot must be")])
def test_bootstrap_interval_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(*samples(10, 0), **kwargs)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        kendall([1, 2, math.nan], [1, 2, 3])


def test_correlation_table_rows_and_missing_values():
    x, y = samples(30, 2)
    frame = pd.DataFrame({"m": x, "noise": np.random.default_rng(0).normal(size=30), "target": y})
    frame.loc[3, "m"] = math.nan
    out = correlation_table(frame, ["m", "noise"], ["target"], n_boot=200)
    assert list(out["predictor"]) == ["m", "noise"] and list(out["n"]) == [29, 30]
    row = out.iloc[0]
    kept = frame[["m", "target"]].dropna()
    assert row["spearman"] == pytest.approx(stats.spearmanr(kept["m"], kept["target"]).statistic)
    assert row["kendall_low"] < row["kendall"] < row["kendall_high"]
    with pytest.raises(ValueError, match=r"columns \['nope'\]"):
        correlation_table(frame, ["nope"], ["target"])
