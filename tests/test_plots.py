"""The workbook's figure style: edge labels that keep apart, symmetric δ scales with a colour bar,
a readable confusion matrix, and panels that say so when their quantity is zero."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rnas_lib import plots  # noqa: E402
from rnas_lib.genotypes import PUBLISHED, random_genotype  # noqa: E402
from rnas_lib.ops import PRIMITIVES  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(ax):
    return [t.get_text() for t in ax.texts]


@pytest.mark.parametrize("reduction", [False, True])
def test_edge_labels_keep_apart(reduction):
    genotypes = list(PUBLISHED.values()) + [random_genotype(4, 4, torch.Generator().manual_seed(i)) for i in range(8)]
    for genotype in genotypes:
        ax = plots.draw_cell(genotype, reduction)
        centres = [np.array(t.get_position()) for t in ax.texts if t.get_text() in PRIMITIVES]
        assert len(centres) == len(genotype.normal)
        closest = min(np.hypot(*(a - b)) for a, b in itertools.combinations(centres, 2))
        assert closest > 0.7, (genotype, closest)
        plt.close(ax.figure)


def test_perturbations_share_one_symmetric_scale_per_row_and_say_when_zero():
    x = torch.full((1, 8, 8), 0.5)
    rows = {"row": [x + 0.05, x - 0.2 * (torch.arange(64).view(1, 8, 8) % 2), x.clone()]}
    fig = plots.perturbation_grid(x, rows, [0.05, 0.2, 0.3])
    deltas = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "RdBu_r"]
    assert len(deltas) == 3
    assert all(np.allclose(im.get_clim(), (-0.2, 0.2)) for im in deltas)  # one scale: the row's largest |δ|
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert "δ = 0" in [t for ax in fig.axes for t in _texts(ax)]


def test_confusion_matrix_writes_light_on_dark_and_dark_on_light():
    confusion = torch.tensor([[9, 1], [3, 7]])
    ax = plots.confusion_matrix(confusion)
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours == {"9": "white", "1": "black", "3": "black", "7": "white"}
    assert np.allclose(ax.images[0].get_array(), [[0.9, 0.1], [0.3, 0.7]])


def test_a_flat_alpha_heatmap_says_it_is_flat():
    ax = plots.alpha_heatmap(np.full((14, len(PRIMITIVES)), 1 / len(PRIMITIVES)))
    assert any("softmax(α) ≈ 1/8" in t for t in _texts(ax))
    ax = plots.alpha_heatmap(np.eye(14, len(PRIMITIVES)))
    assert not any("≈" in t for t in _texts(ax))


def test_certified_radius_histogram_names_networks_with_nothing_certified():
    ax = plots.certified_radius_hist({"a": np.zeros(5), "b": np.array([0.0, 0.01, 0.02])})
    assert any("no image certified" in t and "a" in t for t in _texts(ax))
    ax = plots.certified_radius_hist({"a": np.zeros(5)})
    assert any("every radius is 0" in t for t in _texts(ax))


def test_learning_curves_have_integer_epoch_ticks():
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 1 - 1 / e} for e in (1, 2, 3)]
    fig = plots.learning_curves(history)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_search_convergence_draws_entropy_and_distance_and_says_when_settled_throughout():
    from rnas_lib.genotypes import get_genotype, to_dict

    v2 = to_dict(get_genotype("DARTS_V2"))
    peaked = torch.softmax(torch.eye(8)[[1] * 14] * 3, 1).tolist()
    history = [{"epoch": e + 1, "genotype": v2, "alpha_normal": [[1 / 8] * 8] * 14 if e == 0 else peaked,
                "alpha_reduce": peaked} for e in range(3)]
    fig = plots.search_convergence(history)
    left, right = fig.axes
    normal = left.get_lines()[0].get_ydata()
    assert normal[0] == pytest.approx(1.0) and normal[-1] < 0.7
    assert [p.get_height() for p in right.patches] == [0, 0, 0]
    assert any("final genotype" in t for t in _texts(right))


def test_attack_vs_certificate_draws_one_curve_per_bound_and_shades_from_the_highest():
    grid = [0.0, 0.01, 0.1]
    attacked = {"a": [1.0, 0.9, 0.5], "b": [1.0, 0.8, 0.2]}
    ax = plots.attack_vs_certificate(grid, attacked, {"a": {"crown-ibp": [1.0, 0.6, 0.3], "crown": [1.0, 0.7, 0.1]},
                                                      "b": [1.0, 0.1, 0.0]})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["a: PGD accuracy", "a: certified accuracy (crown-ibp)", "a: certified accuracy (crown)",
                      "b: PGD accuracy", "b: certified accuracy"]
    shaded = ax.collections[0].get_paths()[0].vertices[:, 1]  # the gap of "a": from the higher certificate up
    assert {0.7, 0.3} <= set(np.round(shaded, 6)) and 0.6 not in set(np.round(shaded, 6))
    with pytest.raises(ValueError, match="need one accuracy per ε"):
        plots.attack_vs_certificate(grid, attacked, {"a": {"crown": [1.0]}, "b": [1.0, 0.1, 0.0]})
