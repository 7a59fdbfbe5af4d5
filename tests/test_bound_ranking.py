"""rnas_lib.bound_ranking: mean radii per bound, rank correlations and looseness, against hand computations."""
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest

from rnas_lib import bound_ranking

matplotlib.use("Agg")

# per architecture: (crown, crown-forward) mean radius; crown-forward is 2× looser on A and B, 500× on C
RADII = {"A": (8e-3, 4e-3), "B": (6e-3, 3e-3), "C": (5e-3, 1e-5), "D": (1e-3, 5e-4)}


def synthetic_table(seeds=(0, 1)):
    rows = []
    for arch, (crown, forward) in RADII.items():
        for s in seeds:
            jitter = 1 + 0.1 * (s - 0.5)  # seeds ±5 %: the mean over seeds is the value above
            rows.append({"arch": arch, "seed": s, "cert_method": "crown", "cert_radius_linf": crown * jitter,
                         "cert_radius_l2": 2 * crown * jitter,
                         "cert_radius_linf_crown_forward": forward * jitter, "cert_radius_l2_crown_forward": 2 * forward * jitter,
                         "cert_radius_linf_crown": crown * jitter, "cert_radius_l2_crown": 2 * crown * jitter})
    return pd.DataFrame(rows)


def spearman_by_hand(a, b):
    ra, rb = np.argsort(np.argsort(-a)), np.argsort(np.argsort(-b))
    n = len(a)
    return 1 - 6 * np.sum((ra - rb) ** 2) / (n * (n * n - 1))


def kendall_by_hand(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    signs = [np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs]
    return sum(signs) / len(pairs)


def test_mean_radii_ranks_and_looseness_match_the_radii_they_come_from():
    table = synthetic_table()
    assert bound_ranking.bounds_in(table) == ["crown-forward", "crown"]  # cheapest first
    means = bound_ranking.mean_radii(table, "linf")
    for arch, (crown, forward) in RADII.items():
        assert means.loc[arch, "crown"] == pytest.approx(crown) and means.loc[arch, "crown-forward"] == pytest.approx(forward)
    r = bound_ranking.ranks(table, "linf")
    assert r["crown"].to_dict() == {"A": 1, "B": 2, "C": 3, "D": 4}
    assert r["crown-forward"].to_dict() == {"A": 1, "B": 2, "C": 4, "D": 3}
    loose = bound_ranking.looseness(table, "l2")
    assert loose.loc["C", "crown-forward"] == pytest.approx(500) and loose.loc["A", "crown-forward"] == pytest.approx(2)
    assert (loose["crown"] == 1).all()


def test_rank_correlations_equal_the_textbook_formulas():
    table = synthetic_table()
    corr = bound_ranking.rank_correlations(table, "linf")
    assert len(corr) == 1 and corr.iloc[0]["n_archs"] == 4
    crown = np.array([v[0] for v in RADII.values()])
    forward = np.array([v[1] for v in RADII.values()])
    assert corr.iloc[0]["spearman"] == pytest.approx(spearman_by_hand(crown, forward))  # 0.8: C and D swap
    assert corr.iloc[0]["kendall"] == pytest.approx(kendall_by_hand(crown, forward))    # 4/6
    assert corr.iloc[0]["spearman"] == pytest.approx(0.8)


def test_summary_text_and_figures_are_computed_from_the_table():
    table = synthetic_table()
    text = bound_ranking.summary_text(table)
    assert "ℓ∞, ranked by crown:** A 0.008 > B 0.006 > C 0.005 > D 0.001" in text
    assert "Spearman ρ = 0.80" in text and "500× on C" in text and "2× its radius on" in text
    axes = bound_ranking.plot_radius_by_bound(table, "l2")
    assert [ax.get_title() for ax in axes] == ["crown-forward", "crown"] and axes[0].get_yscale() == "log"
    ax = bound_ranking.plot_rank_change(table, "linf")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["crown-forward", "crown"]


def test_an_older_table_gets_its_headline_bound_as_a_column():
    old = synthetic_table().drop(columns=["cert_radius_linf_crown", "cert_radius_l2_crown"])
    assert bound_ranking.bounds_in(old) == ["crown-forward", "crown"]
    assert bound_ranking.mean_radii(old, "l2")["crown"].to_numpy() == pytest.approx(
        [2 * v[0] for v in RADII.values()])
    mixed = old.assign(cert_method=["crown", "crown-ibp"] * 4)
    with pytest.raises(ValueError, match="one certify_method"):
        bound_ranking.looseness(mixed)


def test_bad_input_is_one_clear_error():
    table = synthetic_table()
    with pytest.raises(ValueError, match="norm must be one of"):
        bound_ranking.mean_radii(table, "l1")
    with pytest.raises(ValueError, match="no 'alpha-crown' radii"):
        bound_ranking.looseness(table, "linf", reference="alpha-crown")
    with pytest.raises(ValueError, match="no per-bound radius columns"):
        bound_ranking.mean_radii(table.drop(columns=[c for c in table if c.startswith("cert_")]), "linf")


def test_relaxation_profile_counts_depth_neurons_and_sign_changes_by_hand():
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Conv2d(2, 3, 1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 4)).eval()
    x = torch.rand(3, 1, 4, 4)
    profile = bound_ranking.relaxation_profile(model, x, eps=0.2, samples=200)
    assert profile["depth"] == 3  # ReLU → max pool → ReLU on the only path
    assert profile["relu_neurons"] == 2 * 4 * 4 + 3 * 2 * 2 and profile["maxpool_neurons"] == 2 * 2 * 2
    # the first ReLU by hand: its input is conv(x) (linear), whose range over the ℓ∞ ball (ignoring the
    # [0, 1] clip) is conv(x) ± eps·‖w‖₁; the sampled count can only find sign changes inside that range
    with torch.no_grad():
        centre = conv(x)
        reach = 0.2 * conv.weight.abs().sum((1, 2, 3)).view(1, -1, 1, 1)
        possible = ((centre - reach < 0) & (centre + reach > 0)).flatten(1).sum(1).float().mean()
    assert 0 < profile["sign_changing_relus"]
    first_only = bound_ranking._sign_changing_relus(torch.nn.Sequential(conv, torch.nn.ReLU()), x, 0.2, 200, 0)
    assert first_only <= possible
    assert bound_ranking.relaxation_profile(model, x, eps=0.0)["sign_changing_relus"] == 0
