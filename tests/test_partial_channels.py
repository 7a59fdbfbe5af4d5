"""Partial-channel search (PC-DARTS): the fused SearchNetwork with ``partial_channels`` against the
per-op reference written as PC-DARTS' model_search.py, edge normalisation, β-weighted derivation,
the Jacobian norm through it."""
import copy

import pytest
import torch
import torch.nn.functional as F

from rnas_lib.genotypes import derive_genotype, edge_normalization, num_edges
from rnas_lib.jacobian import jacobian_norm
from rnas_lib.ops import PRIMITIVES
from rnas_lib.reference import ReferenceSearchNetwork
from rnas_lib.supernet import SearchNetwork, _shuffled_node, channel_shuffle

pytestmark = pytest.mark.usefixtures("one_thread_float64")


def _pair(C, K, layers=3, seed=0, in_channels=1):
    torch.manual_seed(seed)
    net = SearchNetwork(C, 10, layers, in_channels=in_channels, partial_channels=K)
    with torch.no_grad():  # α and β far from uniform, so every op and edge weight matters
        for p in net.arch_parameters():
            p.normal_()
    ref = ReferenceSearchNetwork(C, 10, layers, in_channels=in_channels, partial_channels=K).load_from(net)
    return net, ref


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("C, K, batch", [(4, 4, 3), (8, 2, 1), (4, 1, 2)])
def test_forward_matches_pc_darts_reference_in_train_and_eval_mode(C, K, batch):
    net, ref = _pair(C, K)
    x = torch.rand(batch, 1, 8, 8)
    assert (net(x) - ref(x)).abs().max().item() < 1e-12
    net.eval(), ref.eval()  # running statistics were updated alike
    assert (net(x) - ref(x)).abs().max().item() < 1e-12


def test_gradients_match_pc_darts_reference_for_weights_alpha_and_beta():
    net, ref = _pair(4, 4, seed=1, in_channels=3)
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([1, 5, 7])
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    ref_grads = dict(zip((n for n, _ in ref.named_parameters()),
                         torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()), allow_unused=True)))
    by_name = dict(zip((n for n, _ in net.named_parameters()), grads))
    for name in ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce", "stem.0.weight"):
        assert _rel(by_name[name], ref_grads[name]) < 1e-10, name
    # every cell weight, mapped into the reference layout as load_from maps the weights
    holder = copy.deepcopy(net)
    with torch.no_grad():
        for p, g in zip(holder.parameters(), grads):
            p.copy_(g)
    mapped = dict(ReferenceSearchNetwork(4, 10, 3, in_channels=3, partial_channels=4).load_from(holder)
                  .named_parameters())
    checked = 0
    for name, g in ref_grads.items():
        if name.startswith("cells.") and g is not None:
            # (1×1 convs on one channel before a BatchNorm have a zero gradient up to round-off)
            torch.testing.assert_close(mapped[name], g, rtol=1e-7, atol=1e-10, msg=name)
            checked += 1
    assert checked > 100


def test_channel_shuffle_is_pc_darts_permutation_and_node_layout():
    B, c, K, H = 2, 3, 4, 5
    x = torch.arange(B * c * K * H * H, dtype=torch.float64).view(B, c * K, H, H)
    y = channel_shuffle(x, K)
    for g in range(K):
        for a in range(c):
            assert torch.equal(y[:, a * K + g], x[:, g * c + a])
    mixed = torch.randn(B, c, H, H).contiguous(memory_format=torch.channels_last)
    bypass = torch.randn(B, c * (K - 1), H, H).contiguous(memory_format=torch.channels_last)
    assert torch.equal(_shuffled_node(mixed, bypass, K), channel_shuffle(torch.cat([mixed, bypass], 1), K))


def test_edge_normalization_is_a_softmax_per_node():
    beta = torch.randn(num_edges(4))
    w = edge_normalization(beta, 4)
    start = 0
    for j in range(4):
        torch.testing.assert_close(w[start : start + 2 + j], torch.softmax(beta[start : start + 2 + j], 0))
        start += 2 + j
    with pytest.raises(ValueError, match="beta must have shape"):
        edge_normalization(torch.randn(5), 4)


def _pc_darts_parse(weights, weights2, steps):
    """PC-DARTS' genotype()._parse, written out: W = softmax(α) rows times the normalised β (each
    node's two edges listed by input index, as rnas lists them)."""
    gene, n, start = [], 2, 0
    none = PRIMITIVES.index("none")
    for _ in range(steps):
        W = weights[start : start + n] * weights2[start : start + n, None]
        edges = sorted(range(n), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in sorted(edges):
            k_best = max((k for k in range(len(W[j])) if k != none), key=lambda k: W[j][k])
            gene.append((PRIMITIVES[k_best], j))
        start, n = start + n, n + 1
    return gene


def test_genotype_uses_beta_weighted_alpha():
    torch.manual_seed(3)
    net = SearchNetwork(4, 10, 3, in_channels=1, partial_channels=2)
    with torch.no_grad():
        net.alphas_normal.normal_(std=0.3)
        net.alphas_reduce.normal_(std=0.3)
        net.betas_normal.normal_(std=3.0)  # strong β: the derivation must differ from α alone
        net.betas_reduce.normal_(std=3.0)
    g = net.genotype()
    for cell, alpha, beta in (("normal", net.alphas_normal, net.betas_normal),
                              ("reduce", net.alphas_reduce, net.betas_reduce)):
        expected = _pc_darts_parse(torch.softmax(alpha, -1).detach(), edge_normalization(beta, 4).detach(), 4)
        assert getattr(g, cell) == expected
    assert g != derive_genotype(net.alphas_normal, net.alphas_reduce)
    with pytest.raises(ValueError, match="both beta_normal and beta_reduce"):
        derive_genotype(net.alphas_normal, net.alphas_reduce, beta_normal=net.betas_normal)


def test_arch_parameters_list_alpha_first_then_beta():
    net = SearchNetwork(4, 10, 3, in_channels=1, partial_channels=4)
    a = net.arch_parameters()
    assert [p is q for p, q in zip(a, (net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce))] \
        == [True] * 4
    assert net.betas_normal.shape == (num_edges(4),)
    assert len(net.weights()) + 4 == len(list(net.parameters()))
    plain = SearchNetwork(4, 10, 3, in_channels=1)
    assert len(plain.arch_parameters()) == 2 and plain.edge_weights() == (None, None)


@pytest.mark.parametrize("K", [3, 0, 2.0, True])
def test_bad_partial_channels_raise(K):
    with pytest.raises(ValueError, match="partial_channels"):
        SearchNetwork(4, 10, 3, in_channels=1, partial_channels=K)
    net = SearchNetwork(4, 10, 3, in_channels=1, partial_channels=2)
    with pytest.raises(ValueError, match="partial_channels=2"):
        ReferenceSearchNetwork(4, 10, 3, in_channels=1).load_from(net)


def test_jacobian_norm_matches_reference_with_its_gradients():
    net, ref = _pair(4, 4, seed=2)
    x = torch.rand(2, 1, 8, 8)
    for mode in ("exact", "top_logit"):
        a = jacobian_norm(net, x, mode=mode, q=2)
        b = jacobian_norm(ref, x, mode=mode, q=2)
        assert _rel(a, b) < 1e-10
        ga = torch.autograd.grad(a.sum(), net.arch_parameters())
        gb = torch.autograd.grad(b.sum(), ref.arch_parameters())
        for u, v in zip(ga, gb):
            assert u.abs().sum() > 0 and _rel(u, v) < 1e-8
