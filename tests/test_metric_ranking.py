"""rnas_lib.metric_ranking on synthetic metric-validation tables whose answer is known."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rnas_lib import metric_ranking as mr
from rnas_lib.metric_validation import METRICS, MOMENTS, PROXIES, TABLE_COLUMNS, TARGETS


def synthetic_table(n=60, seeds=(0, 1), rng_seed=0):
    """R_CB radius after the short training predicts the certified radius (ℓ∞) and the PGD accuracy,
    R_J exact at init predicts them the wrong way round, everything else is noise; two seeds per
    architecture with seed noise."""
    rng = np.random.default_rng(rng_seed)
    quality = rng.normal(size=n)
    rows = []
    for seed in seeds:
        for a in range(n):
            row = {c: rng.normal() for c in TABLE_COLUMNS if c.endswith(tuple(f"_{m}" for m in MOMENTS))}
            row.update(arch=f"random-{a:03d}" if a > 1 else ["DARTS_V2", "darts-seed0"][a],
                       source="random" if a > 1 else ["published", "searched"][a], seed=seed,
                       params=int(rng.integers(10_000, 40_000)), skip_connections=int(rng.integers(0, 6)))
            row["r_cb_radius_short"] = quality[a] + 0.3 * rng.normal()
            row["r_j_exact_init"] = -quality[a] + 0.3 * rng.normal()
            for target in TARGETS:
                row[target] = rng.normal()
            row["cert_radius_linf"] = 0.01 + 0.002 * (quality[a] + 0.3 * rng.normal())
            row["pgd_linf_acc"] = 0.4 + 0.05 * (quality[a] + 0.3 * rng.normal())
            rows.append(row)
    return pd.DataFrame(rows)


def test_correlations_find_the_planted_relations_and_only_those():
    table = synthetic_table()
    corr = mr.correlations(table, n_boot=300)
    assert len(corr) == (len(METRICS) * len(MOMENTS) + len(PROXIES)) * len(TARGETS)
    assert set(corr.loc[corr["predictor"].isin(PROXIES), "kind"]) == {"proxy"}
    pick = corr.set_index(["predictor", "target"])
    for target in ("cert_radius_linf", "pgd_linf_acc"):
        assert pick.loc[("r_cb_radius_short", target), "verdict"] == "supports"
        assert pick.loc[("r_j_exact_init", target), "verdict"] == "contradicts"
    # seeds are averaged before the ranks: n counts architectures, and τ is scipy's on the means
    means = table.groupby("arch")[["r_cb_radius_short", "cert_radius_linf"]].mean()
    row = pick.loc[("r_cb_radius_short", "cert_radius_linf")]
    assert row["n"] == 60
    assert row["kendall"] == pytest.approx(stats.kendalltau(means["r_cb_radius_short"], means["cert_radius_linf"]).statistic)
    noise = corr[~corr["predictor"].isin(["r_cb_radius_short", "r_j_exact_init"])]
    assert (noise["verdict"] != "undecided").mean() < 0.15  # about 5 % by chance


def test_the_conclusion_is_computed_from_the_correlations():
    corr = mr.correlations(synthetic_table(), n_boot=300)
    text = mr.conclusion(corr)
    assert "Over **60 architectures**" in text
    line = next(s for s in text.splitlines() if s.startswith("- **certified radius ℓ∞**"))
    assert "strongest search metric is R_CB radius after short training" in line
    assert "Contradicting it: R_J exact at init" in line
    best = corr[(corr["target"] == "cert_radius_linf") & (corr["kind"] == "search metric")]["kendall"].max()
    assert f"τ = {best:+.2f}" in line
    assert f"{int((corr['verdict'] != 'undecided').sum())} do" in text
    assert "nothing here is evidence" not in text
    few = mr.correlations(synthetic_table(n=8), n_boot=100)
    assert "With only 8 architectures" in mr.conclusion(few)


def test_named_cells_and_moment_agreement():
    table = synthetic_table()
    named = mr.named_cells(table, "cert_radius_linf")
    assert list(named["arch"]) == ["DARTS_V2", "darts-seed0"] and named["percentile"].between(0, 100).all()
    agreement = mr.moment_agreement(table)
    assert list(agreement["metric"]) == [mr.METRIC_LABELS[m] for m in METRICS]
    assert agreement["spearman_init_short"].abs().max() < 0.5  # independent noise in the synthetic table


def test_labels_and_bad_tables():
    assert mr.label("r_cb_radius_short") == "R_CB radius after short training"
    assert mr.label("cb_margin_bound_init") == "margin bound at init"
    assert mr.label("pgd_l2_acc") == "PGD ℓ2 accuracy"
    with pytest.raises(ValueError, match="neither a search metric"):
        mr.label("r_cb_radius_later")
    with pytest.raises(ValueError, match="not a metric-validation table"):
        mr.correlations(pd.DataFrame({"arch": ["a"], "clean_acc": [1.0]}))
    assert [mr.verdict(*v) for v in ((0.1, 0.3), (-0.3, -0.1), (-0.1, 0.2), (float("nan"), float("nan")))] == \
        ["supports", "contradicts", "undecided", "undecided"]
