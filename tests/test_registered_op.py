"""A primitive is one registry entry: DARTS' conv_7x1_1x7, registered for the length of each test,
goes through the whole workbook — the fused supernet against the per-op reference, a search step,
genotype derivation, the derived network against the reference network (one REFERENCE_OPS row),
sound bounds on both networks, and a certified radius that PGD cannot beat. Bad registrations
raise one clear ValueError and leave the registry as it was."""
from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

from rnas_lib import ops, plots, reference
from rnas_lib.attacks import pgd
from rnas_lib.batchnorm import BatchNorm2d
from rnas_lib.bounds import margin_lower_bound, output_bounds
from rnas_lib.data import TensorData
from rnas_lib.genotypes import Genotype, derive_genotype, num_edges
from rnas_lib.network import Network
from rnas_lib.ops import OP_COLORS, OPS, PRIMITIVES, make_op, register_primitive, registered_primitive
from rnas_lib.reference import ReferenceNetwork, ReferenceSearchNetwork
from rnas_lib.runs import load_json
from rnas_lib.search import SearchConfig, search, search_space_config
from rnas_lib.supernet import SearchNetwork
from rnas_lib.verify import certified_radius, falsify_margin
from test_bounds import check_model, derived, frozen, supernet  # the bound tests' models and soundness checker

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread_float64")

NAME, COLOR = "conv_7x1_1x7", "tab:green"
DARTS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
         "dil_conv_3x3", "dil_conv_5x5")


def conv_7x1_1x7(C, stride, affine):
    """DARTS' conv_7x1_1x7: ReLU → 1×7 conv → 7×1 conv → BN."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        BatchNorm2d(C, affine=affine),
    )


def reference_row(C, stride):
    """The same op as the reference network writes it (plain torch modules, affine BatchNorm)."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, (1, 7), (1, stride), (0, 3), bias=False),
                         nn.Conv2d(C, C, (7, 1), (stride, 1), (3, 0), bias=False), nn.BatchNorm2d(C))


@pytest.fixture
def conv7(monkeypatch):
    """conv_7x1_1x7 registered (and its reference row added) for one test only."""
    monkeypatch.setitem(reference.REFERENCE_OPS, NAME, reference_row)
    with registered_primitive(NAME, conv_7x1_1x7, COLOR) as entry:
        yield entry
    assert tuple(PRIMITIVES) == DARTS  # gone afterwards: no other test sees it


# a genotype whose every edge is the new op (reduction edges from the cell inputs stride 2)
ALL_CONV7 = Genotype(normal=[(NAME, 0), (NAME, 1), (NAME, 1), (NAME, 2)], normal_concat=[2, 3],
                     reduce=[(NAME, 0), (NAME, 1), (NAME, 1), (NAME, 2)], reduce_concat=[2, 3])
# the new op next to every DARTS op kind, in both cell types
MIXED = Genotype(normal=[(NAME, 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), (NAME, 2)], normal_concat=[2, 3],
                 reduce=[("skip_connect", 0), (NAME, 1), (NAME, 1), ("avg_pool_3x3", 2)], reduce_concat=[2, 3])


def favour_new_op(net: SearchNetwork, by: float = 3.0) -> SearchNetwork:
    with torch.no_grad():
        for a in (net.alphas_normal, net.alphas_reduce):
            a[:, PRIMITIVES.index(NAME)] += by
    return net


# ----------------------------------------------------------------------------- the registry
def test_registry_views_follow_registration(conv7):
    assert conv7.name == NAME and not conv7.fused and conv7.color == COLOR
    assert tuple(PRIMITIVES) == DARTS + (NAME,) and PRIMITIVES.index(NAME) == 8 and NAME in PRIMITIVES
    assert OPS[NAME] is conv_7x1_1x7 and OP_COLORS[NAME] == COLOR and plots.OP_COLORS[NAME] == COLOR
    assert [p.name for p in ops.registered_primitives() if p.fused] == list(DARTS)
    x = torch.rand(2, 3, 8, 8)
    assert make_op(NAME, 3, 1)(x).shape == (2, 3, 8, 8) and make_op(NAME, 3, 2)(x).shape == (2, 3, 4, 4)
    # the figures read the registry: a 9-column α heatmap, the new op's colour in the cell diagram
    ax = plots.alpha_heatmap(torch.softmax(torch.randn(num_edges(4), 9), 1).numpy())
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == NAME
    ax = plots.draw_cell(ALL_CONV7)
    labels = [t for t in ax.texts if t.get_text() == NAME]
    assert len(labels) == 4 and all(matplotlib.colors.same_color(t.get_color(), COLOR) for t in labels)
    matplotlib.pyplot.close("all")


def test_the_context_manager_unregisters_after_an_error():
    with pytest.raises(RuntimeError, match="inside"):
        with registered_primitive(NAME, conv_7x1_1x7, COLOR):
            assert len(PRIMITIVES) == 9
            raise RuntimeError("inside")
    assert tuple(PRIMITIVES) == DARTS and NAME not in OPS and len(OP_COLORS) == 8


def _not_a_module(C, stride, affine):
    return "conv"


def _keeps_resolution(C, stride, affine):
    return nn.Conv2d(C, C, 3, padding=1)  # ignores the stride


def _raises(C, stride, affine):
    raise TypeError("no such op")


@pytest.mark.parametrize("name, builder, color, message", [
    ("sep_conv_3x3", conv_7x1_1x7, COLOR, "already registered"),
    ("none", conv_7x1_1x7, COLOR, "already registered"),
    ("conv 7x1", conv_7x1_1x7, COLOR, "Python identifier"),
    (7, conv_7x1_1x7, COLOR, "Python identifier"),
    (NAME, "conv_7x1_1x7", COLOR, "builder must be callable"),
    (NAME, None, COLOR, "builder must be callable"),
    (NAME, conv_7x1_1x7, "not-a-colour", "matplotlib colour"),
    (NAME, conv_7x1_1x7, None, "matplotlib colour"),
    (NAME, _not_a_module, COLOR, "must return an nn.Module"),
    (NAME, _keeps_resolution, COLOR, r"at stride 2 it gave output \(2, 4, 8, 8\)"),
    (NAME, _raises, COLOR, "failed: TypeError"),
])
def test_bad_registrations_raise_one_clear_error(name, builder, color, message):
    state = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=message):
        register_primitive(name, builder, color)
    assert tuple(PRIMITIVES) == DARTS  # nothing half-registered
    assert torch.equal(torch.random.get_rng_state(), state)  # the builder probe leaves the RNG alone


def test_duplicate_registration_and_bad_unregistration_raise(conv7):
    with pytest.raises(ValueError, match=f"'{NAME}' is already registered"):
        register_primitive(NAME, conv_7x1_1x7, COLOR)
    with pytest.raises(ValueError, match="removable: conv_7x1_1x7"):
        ops.unregister_primitive("skip_connect")  # the DARTS ops stay
    with pytest.raises(ValueError, match="not added with register_primitive"):
        ops.unregister_primitive("conv_9x9")
    with pytest.raises(ValueError, match="unknown primitive 'conv_9x9'.*conv_7x1_1x7"):
        make_op("conv_9x9", 4, 1)


# ----------------------------------------------------------------------------- the supernet
@pytest.mark.parametrize("K", [1, 2])
def test_fused_supernet_matches_the_per_op_reference(conv7, K):
    """Forward in train and eval mode, and the gradient of α's new column, against the per-op
    reference supernet (PC-DARTS partial channels included)."""
    torch.manual_seed(K)
    net = SearchNetwork(4, 5, 3, steps=3, multiplier=3, in_channels=1, partial_channels=K)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    favour_new_op(net, 1.0)
    assert net.alphas_normal.shape == (num_edges(3), 9) and net.primitives[-1] == NAME
    assert sum(len(edge) for cell in net.cells for src in cell.added for edge in src) == 3 * num_edges(3)
    ref = ReferenceSearchNetwork(4, 5, 3, steps=3, multiplier=3, in_channels=1, partial_channels=K).load_from(net)
    x = torch.rand(6, 1, 8, 8)
    out, out_ref = net(x), ref(x)  # one train-mode forward each: their running statistics move alike
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    col = PRIMITIVES.index(NAME)
    (g,) = torch.autograd.grad(out.square().sum(), net.alphas_normal)
    (g_ref,) = torch.autograd.grad(out_ref.square().sum(), ref.alphas_normal)
    assert g[:, col].abs().max() > 1e-6
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-10)
    net.eval(), ref.eval()
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=1e-10)
    # without the new op's weight the supernet differs: the check above is not vacuous
    with torch.no_grad():
        ref.alphas_normal[:, col] = -30.0
    assert (net(x) - ref(x)).abs().max() > 1e-4


def test_one_search_step_trains_the_new_op(conv7, tmp_path):
    """One epoch of one batch (an α step on the validation half, a w step on the training half)
    moves α's new column and the weights of the new op's modules; the run's configuration names
    the search space (DARTS runs keep theirs without the key)."""
    torch.manual_seed(0)
    net = SearchNetwork(4, 10, 3, steps=2, multiplier=2, in_channels=1, mean=[0.3], std=[0.4])
    gen = torch.Generator().manual_seed(0)
    data = [TensorData(torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen))
            for _ in range(2)]
    alpha = net.alphas_normal.detach().clone()
    added = [p.detach().clone() for p in net.cells[0].added.parameters()]
    assert added  # the new op's convolutions on every edge of the cell
    result = search(net, *data, SearchConfig(epochs=1, batch_size=16, lr_alpha=0.1), tmp_path, progress=False)
    col = PRIMITIVES.index(NAME)
    assert (net.alphas_normal[:, col] - alpha[:, col]).abs().min() > 0
    assert all((p - q).abs().max() > 0 for p, q in zip(net.cells[0].added.parameters(), added))
    assert len(result.history) == 1 and torch.tensor(result.history[0]["alpha_normal"]).shape == (num_edges(2), 9)
    assert load_json(tmp_path / "config.json")["primitives"] == list(DARTS) + [NAME]
    assert search_space_config(DARTS) == {}


def test_genotype_selects_the_new_op_and_the_derived_network_matches_the_reference(conv7):
    net = SearchNetwork(4, 5, 3, steps=2, multiplier=2, in_channels=1)
    with torch.no_grad():  # edges 0→n0, 1→n0, 1→n1, 2→n1 favour the new op; 0→n1 a DARTS op, less strongly
        for a in (net.alphas_normal, net.alphas_reduce):
            a.zero_()
            a[[0, 1, 3, 4], PRIMITIVES.index(NAME)] = 5.0
            a[2, PRIMITIVES.index("sep_conv_3x3")] = 4.0
    genotype = net.genotype()
    assert genotype == ALL_CONV7
    a = torch.zeros(num_edges(2), 9)
    a[:, PRIMITIVES.index("sep_conv_5x5")] = 2.0
    assert {op for op, _ in derive_genotype(a, a, 2, 2).normal} == {"sep_conv_5x5"}  # it is α that picks it
    for g in (genotype, MIXED):
        model = Network(g, 4, 5, 3, in_channels=1).eval()
        ref = ReferenceNetwork(g, 4, 5, 3, in_channels=1).load_from(model).eval()
        x = torch.rand(4, 1, 8, 8)
        with torch.no_grad():
            out = model(x)
            assert out.shape == (4, 5) and torch.isfinite(out).all()
            torch.testing.assert_close(out, ref(x), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- bounds and radii
def exact_at_zero(model, x):
    """At ε = 0 every method's bounds are the outputs of the independent (frozen-BatchNorm) copy:
    the traced function is the network's, new op included (loose train-mode bounds at ε > 0 could
    hide a missing term)."""
    with torch.no_grad():
        out = frozen(model, x)(x)
    for method in ("ibp", "crown-ibp", "crown"):
        for bound in output_bounds(model, x, 0.0, "inf", method):
            torch.testing.assert_close(bound, out, rtol=0, atol=1e-9)


@pytest.mark.parametrize("train", [False, True])
def test_supernet_bounds_are_sound(conv7, train):
    """Random points and PGD on every bound's violation; train mode bounds the supernet with its
    BatchNorms frozen at the clean batch's statistics (as the bound tests check it)."""
    net = favour_new_op(supernet(20 + train, train=train), by=2.0)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(int(train)))
    exact_at_zero(net, x)
    check_model(net, x, torch.tensor([0, 3, 4]), 0.03, "inf", (0.0, 1.0), methods=("ibp", "crown-ibp"))
    small = favour_new_op(supernet(22 + train, train=train, partial_channels=2), by=2.0)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    exact_at_zero(small, x)
    check_model(small, x, torch.tensor([1, 2]), torch.tensor([0.05, 0.15]), 2, None, methods=("crown",))


@pytest.mark.parametrize("train", [False, True])
def test_derived_network_bounds_are_sound(conv7, train):
    net = derived(30 + train, MIXED, train=train)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    exact_at_zero(net, x)
    check_model(net, x, torch.tensor([4, 0, 2]), 0.05, "inf", (0.0, 1.0), methods=("ibp", "crown-ibp", "crown"))


def test_certified_radius_holds_against_pgd(conv7, tiny_network):
    """Every crown certificate of a network with the new op on every edge: positive margin bound at
    the radius, and neither margin descent nor PGD on the cross-entropy changes the prediction."""
    net, x, y = tiny_network(ALL_CONV7)
    r = certified_radius(net, x, y, "inf", "crown", eps_max=0.2, tol=2e-4)
    ok = r > 0
    assert ok.sum() >= 3
    assert (margin_lower_bound(net, x[ok], y[ok], r[ok], "inf", "crown") > 0).all()
    gen = torch.Generator().manual_seed(0)
    assert (falsify_margin(net, x[ok], y[ok], r[ok], "inf", n_random=64, steps=40, generator=gen) > 0).all()
    x_adv = pgd(net, x[ok], y[ok], r[ok], "inf", steps=40, restarts=3, generator=gen)
    assert ((x_adv - x[ok]).abs().flatten(1).amax(1) <= r[ok] + 1e-12).all()
    with torch.no_grad():
        assert (net(x_adv).argmax(1) == y[ok]).all()
    # the same attacks have teeth: far beyond the radius they break some prediction
    far = falsify_margin(net, x[ok], y[ok], (20 * r[ok]).clamp(max=1.0), "inf", n_random=64, steps=40, generator=gen)
    assert (far <= 0).any()
