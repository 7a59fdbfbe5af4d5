"""rnas_lib.study: summaries over seeds, paired tests against independent formulas, a conclusion
that follows the data, the paper's figures with their comparability."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rnas_lib import study
from rnas_lib.sweep import TABLE_COLUMNS
from rnas_lib.tiers import get_tier


def synthetic_table(shift_cb=0.05, seeds=(0, 1, 2, 3, 4), noise=0.01):
    """darts, dsrna_cb (darts + shift_cb + noise on the PGD accuracy and the radius) and DARTS_V2."""
    rng = np.random.default_rng(0)
    rows = []
    for arch, shift in (("darts", 0.0), ("dsrna_cb", shift_cb), ("DARTS_V2", -0.02)):
        for s in seeds:
            base = 0.5 + 0.03 * s  # a seed effect shared by all archs: what pairing removes
            row = {c: 0 for c in TABLE_COLUMNS}
            row.update({"study": "synthetic", "arch": arch, "seed": s, "tier": "smoke", "dataset": "digits",
                        "published": arch == "DARTS_V2", "n_eval": 100, "clean_acc": 0.9 + 0.01 * s,
                        "pgd_linf_acc": base + shift + noise * rng.standard_normal(),
                        "pgd_linf_eps": 0.05, "fgsm_linf_eps": 0.05, "pgd_l2_eps": 0.5, "cw_l2_eps": 0.5,
                        "autoattack_linf_eps": 0.05, "pgd_l2_acc": base, "autoattack_linf_acc": base,
                        "fgsm_linf_acc": base, "cw_l2_acc": base,
                        "cert_radius_linf": 0.01 + shift / 10 + 0.001 * rng.standard_normal(),
                        "cert_radius_l2": 0.1, "cert_method": "crown",
                        "search_seconds": math.nan if arch == "DARTS_V2" else (100.0 if arch == "darts" else 500.0)})
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def test_paired_t_test_matches_the_formula_and_wilcoxon_cannot_reach_005_with_5_pairs():
    table = synthetic_table()
    tests = study.paired_tests(table, "darts")
    row = tests[(tests["arch"] == "dsrna_cb") & (tests["metric"] == "pgd_linf_acc")].iloc[0]
    d = (table[table["arch"] == "dsrna_cb"]["pgd_linf_acc"].to_numpy()
         - table[table["arch"] == "darts"]["pgd_linf_acc"].to_numpy())
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert row["n"] == 5 and row["mean_diff"] == pytest.approx(d.mean()) and row["t"] == pytest.approx(t)
    assert row["p_ttest"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert row["p_ttest"] < 0.05  # a shift of 5 noise widths on every seed
    assert row["p_wilcoxon"] == pytest.approx(2 / 2 ** 5)  # the smallest p the exact test has at n = 5
    # identical differences on every seed (pgd_l2_acc equal for all archs): no test, not a p of 0 or 1
    same = tests[(tests["arch"] == "dsrna_cb") & (tests["metric"] == "pgd_l2_acc")].iloc[0]
    assert same["mean_diff"] == 0 and math.isnan(same["p_ttest"])


def test_pairing_uses_only_common_seeds():
    table = synthetic_table()
    table = table[~((table["arch"] == "dsrna_cb") & (table["seed"] == 4))]
    d = study.paired_differences(table, "dsrna_cb", "darts", "pgd_linf_acc")
    assert len(d) == 4


def test_summary_and_conclusion_follow_the_data():
    better = study.conclusion(synthetic_table(0.05), study.paired_tests(synthetic_table(0.05)))
    worse_table = synthetic_table(-0.05)
    worse = study.conclusion(worse_table, study.paired_tests(worse_table))
    assert "PGD ℓ∞ accuracy at ε=0.05: **dsrna_cb**" in better
    assert "PGD ℓ∞ accuracy at ε=0.05: **darts**" in worse
    assert "**higher** at α = 0.05" in better and "**lower** at α = 0.05" in worse
    mean = synthetic_table(0.05).query("arch == 'dsrna_cb'")["pgd_linf_acc"].mean()
    assert f"{mean:.4g}" in better
    tied = synthetic_table(0.0, noise=0.0)
    text = study.conclusion(tied, study.paired_tests(tied))
    assert "PGD ℓ∞ accuracy at ε=0.05: tie between **darts**, **dsrna_cb**" in text
    assert "PGD ℓ2 accuracy at ε=0.05: all equal" not in text and "PGD ℓ2 accuracy at ε=0.5: all equal" in text
    summary = study.summarize(synthetic_table())
    assert list(summary.index) == ["darts", "dsrna_cb", "DARTS_V2"]
    assert summary.loc["darts", ("search_seconds", "mean")] == 100.0
    saved = study.summary_dict(synthetic_table())
    assert saved["DARTS_V2"]["search_seconds"] == {"mean": None, "std": None, "n": 0.0}
    assert saved["darts"]["clean_acc"]["mean"] == pytest.approx(0.92)
    formatted = study.format_summary(synthetic_table())
    assert "PGD ℓ∞ accuracy at ε=0.05" in formatted.columns and list(formatted["seeds"]) == [5, 5, 5]


def test_a_missing_baseline_is_one_clear_error():
    table = synthetic_table()
    with pytest.raises(ValueError, match="baseline 'pcdarts' has no finished runs"):
        study.paired_tests(table, "pcdarts")


def test_paper_figures_say_why_they_do_not_compare():
    table = synthetic_table()
    jb = table[table["arch"] == "darts"].assign(arch="dsrna_jb")  # search cost 100 s against dsrna_cb's 500 s
    paper = study.paper_comparison(pd.concat([table, jb], ignore_index=True), get_tier("smoke"))
    assert set(paper["confidence"]) <= {"A", "B", "C", "D"}
    cert = paper[paper["figure"] == "average certified ℓ2 lower bound"].iloc[0]
    assert cert["paper"] == 0.4288 and cert["rnas (mean over seeds)"] == pytest.approx(0.1)
    assert cert["comparable"] == "no" and "dataset" in cert["why"]
    pgd = paper[paper["figure"].str.startswith("PGD-100")].iloc[0]
    assert "ε" in pgd["why"] and pgd["comparable"] == "no"
    ratio = paper[(paper["figure"].str.startswith("search cost")) & (paper["dataset"] == "mnist")].iloc[0]
    assert ratio["rnas (mean over seeds)"] == pytest.approx(5.0) and ratio["paper"] == pytest.approx(5.0)
