"""The fused supernet (mixed edges computed by source node) against the per-op reference."""
import copy

import pytest
import torch
import torch.nn.functional as F

from rnas_lib.genotypes import Genotype, num_edges
from rnas_lib.ops import PRIMITIVES
from rnas_lib.reference import ReferenceSearchNetwork
from rnas_lib.supernet import SearchNetwork, SourceEdges, _DepthwiseConv

SIZES = [  # (C, layers, in_channels, image size, batch)
    (4, 3, 3, 16, 6),
    (4, 3, 1, 8, 8),
]


def _pair(C, layers, in_channels):
    net = SearchNetwork(C, 10, layers, in_channels=in_channels)
    with torch.no_grad():  # α far from uniform, so every op weight matters
        net.alphas_normal.normal_()
        net.alphas_reduce.normal_()
    return net, ReferenceSearchNetwork(C, 10, layers, in_channels=in_channels).load_from(net)


@pytest.mark.parametrize("C, layers, in_channels, size, batch", SIZES)
def test_forward_matches_reference_in_train_and_eval_mode(C, layers, in_channels, size, batch):
    net, ref = _pair(C, layers, in_channels)
    x = torch.rand(batch, in_channels, size, size)
    out = net(x)
    assert out.shape == (batch, 10)
    assert (out - ref(x)).abs().max().item() < 1e-5
    # both updated their BatchNorm running statistics in training mode: eval mode must agree too
    net.eval(), ref.eval()
    assert (net(x) - ref(x)).abs().max().item() < 1e-5
    fresh = ReferenceSearchNetwork(C, 10, layers, in_channels=in_channels).load_from(net).eval()
    assert (net(x) - fresh(x)).abs().max().item() < 1e-5


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def test_gradients_match_reference_for_weights_and_alpha():
    net, ref = _pair(4, 3, 3)
    x, y = torch.rand(6, 3, 16, 16), torch.randint(0, 10, (6,))
    loss = torch.nn.functional.cross_entropy
    grads = torch.autograd.grad(loss(net(x), y), net.parameters())
    ref_grads = dict(zip((n for n, _ in ref.named_parameters()),
                         torch.autograd.grad(loss(ref(x), y), ref.parameters(), allow_unused=True)))
    by_name = dict(zip((n for n, _ in net.named_parameters()), grads))
    for name in ("alphas_normal", "alphas_reduce", "stem.0.weight", "classifier.weight"):
        assert _rel(by_name[name], ref_grads[name]) < 1e-4, name
    # every cell weight: copy the fused gradients into a reference net with the weight mapping
    # of load_from; they must equal the reference's own gradients entry by entry
    holder = copy.deepcopy(net)
    with torch.no_grad():
        for p, g in zip(holder.parameters(), grads):
            p.copy_(g)
    mapped = dict(ReferenceSearchNetwork(4, 10, 3, in_channels=3).load_from(holder).named_parameters())
    checked = 0
    for name, g in ref_grads.items():
        if name.startswith("cells."):
            if g is None:  # only the parameter-free paths lack a gradient
                assert mapped[name].abs().max().item() == 0, name
                continue
            assert _rel(mapped[name], g) < 1e-4, name
            checked += 1
    assert checked > 100


def test_source_edges_match_finite_differences_in_double():
    torch.manual_seed(1)
    src = SourceEdges(2, 2, 1).double()  # training mode: BN with batch statistics
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(2, len(PRIMITIVES), dtype=torch.float64), -1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: src(x, w), (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_source_edges_parts_and_shapes(stride):
    C, n, B, H = 4, 3, 2, 8
    src = SourceEdges(C, n, stride)
    x = torch.randn(B, C, H, H)
    w = torch.softmax(torch.randn(n, len(PRIMITIVES)), -1)
    Ho = H // stride
    conv = src.conv_ops(x)
    mp, ap = src.pools(x).split(C, dim=1)
    skip = src.skip(x)
    assert conv.shape == (B, 4, n, C, Ho, Ho)
    assert mp.shape == ap.shape == (B, C, Ho, Ho)
    assert skip.shape == ((B, 1, C, H, H) if stride == 1 else (B, n, C, Ho, Ho))
    # forward is the weighted sum of its parts (computed again: BN statistics depend only on x)
    expected = ((conv * w[:, 4:].t().reshape(1, 4, n, 1, 1, 1)).sum(1)
                + w[:, 1].view(1, n, 1, 1, 1) * mp.unsqueeze(1) + w[:, 2].view(1, n, 1, 1, 1) * ap.unsqueeze(1)
                + w[:, 3].view(1, n, 1, 1, 1) * skip)
    assert (src(x, w) - expected).abs().max().item() < 1e-5
    assert src.bn1.num_batches_tracked.item() == 2  # one per call of conv_ops/forward, not per op
    # the pools' one BatchNorm is the two of the ops: each half normalised on its own
    raw = torch.cat([F.max_pool2d(x, 3, stride, 1), F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)])
    for half, pooled in zip(raw.split(B), (mp, ap)):
        assert (F.batch_norm(half, None, None, training=True) - pooled).abs().max().item() < 1e-5


def test_genotype_shape():
    net = SearchNetwork(4, 10, 3, in_channels=1)
    g = net.genotype()
    assert isinstance(g, Genotype)
    assert len(g.normal) == len(g.reduce) == 2 * net.steps
    assert g.normal_concat == g.reduce_concat == list(range(2, 2 + net.steps))
    for op, i in g.normal + g.reduce:
        assert op in PRIMITIVES and op != "none"
    assert net.alphas_normal.shape == (num_edges(4), len(PRIMITIVES))
    assert len(net.arch_parameters()) == 2
    assert len(net.weights()) + 2 == len(list(net.parameters()))


@pytest.mark.parametrize("kwargs", [dict(C=0), dict(layers=-1), dict(C=2.5), dict(multiplier=5),
                                    dict(in_channels=0), dict(num_classes=0)])
def test_bad_constructor_arguments_raise(kwargs):
    args = dict(C=4, num_classes=10, layers=3) | kwargs
    with pytest.raises(ValueError):
        SearchNetwork(**args)


@pytest.mark.parametrize("C, n, stride", [(4, 2, 3), (3, 2, 2), (0, 2, 1), (4, 0, 1)])
def test_bad_source_edges_raise(C, n, stride):
    with pytest.raises(ValueError):
        SourceEdges(C, n, stride)


def test_odd_spatial_size_in_reduction_cell_raises():
    with pytest.raises(ValueError, match="even spatial size"):
        SearchNetwork(4, 10, 3, in_channels=1)(torch.rand(2, 1, 6, 6))


@pytest.mark.parametrize("k, dilation", [(3, 1), (5, 2)])
def test_multiplier_depthwise_conv_gradients_match_conv2d_in_double(k, dilation):
    torch.manual_seed(3)
    C, n, pad = 3, 2, dilation * (k - 1) // 2
    x = torch.randn(2, C, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(C * n, 1, k, k, dtype=torch.float64, requires_grad=True)
    ours = lambda x, w: _DepthwiseConv.apply(x, w, pad, dilation)  # noqa: E731
    theirs = lambda x, w: F.conv2d(x, w, padding=pad, dilation=dilation, groups=C)  # noqa: E731
    g = torch.randn_like(theirs(x, w))
    for a, b in zip(torch.autograd.grad(ours(x, w), (x, w), g), torch.autograd.grad(theirs(x, w), (x, w), g)):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x, w))
    assert torch.autograd.gradgradcheck(ours, (x, w))  # double backward (Jacobian-norm search)
    jac = torch.func.jacrev(ours, argnums=(0, 1))(x, w)
    for a, b in zip(jac, torch.func.jacrev(theirs, argnums=(0, 1))(x, w)):
        assert torch.allclose(a, b, atol=1e-12)  # torch.func transforms work through it
