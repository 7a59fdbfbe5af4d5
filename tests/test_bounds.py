"""Soundness, exactness, tightness and gradients of rnas_lib.bounds.

Soundness is checked against an independent evaluation of the network: the model itself in eval
mode; in train mode (BatchNorm on the clean batch's statistics) a copy of the per-op reference
supernet (or of the network) whose BatchNorms carry the statistics captured by forward hooks on
the clean batch, in eval mode. Points: random points in the ball and its corners/sphere, and PGD
ascent on every bound's violation, projected onto the ball ∩ [0, 1] box.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rnas_lib import bounds, robustness
from rnas_lib.bounds import margin_lower_bound, output_bounds, trace
from rnas_lib.certify import forward
from rnas_lib.certify.ball import Ball
from rnas_lib.certify.primitives import AvgPool, Conv, MaxPool, ReLU, conv_by_taps
from rnas_lib.certify.primitives.maxpool import window_choice
from rnas_lib.certify.refine import undecided
from rnas_lib.certify.state import BoundState
from rnas_lib.data import load_dataset, search_split
from rnas_lib.genotypes import Genotype, random_genotype
from rnas_lib.network import Network
from rnas_lib.ops import Normalize, Zero
from rnas_lib.reference import ReferenceSearchNetwork
from rnas_lib.robustness import TERMS
from rnas_lib.search import SearchConfig, search
from rnas_lib.supernet import SearchNetwork

TOL = 1e-9  # float64 round-off allowance on a violation
CHECKED = {"points": 0, "configs": 0}


pytestmark = pytest.mark.usefixtures("one_thread_float64")


# ----------------------------------------------------------------------------- random models
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random α (far from uniform), BN statistics and affine parameters; weights scaled up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("alphas", "betas")):
                p.copy_(2.0 * torch.randn(p.shape, generator=g))
            elif p.dim() > 1:
                p.mul_(1.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.2 + 1.5 * torch.rand(m.num_features, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
    return model


def supernet(seed, C=2, layers=3, steps=2, classes=5, train=False, partial_channels=1):
    torch.manual_seed(seed)
    net = SearchNetwork(C, classes, layers, steps=steps, multiplier=steps, in_channels=1, mean=[0.4], std=[0.3],
                        partial_channels=partial_channels)
    return randomize(net, seed).train(train)


ALL_OPS = Genotype(
    normal=[("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 2),
            ("sep_conv_5x5", 1), ("dil_conv_3x3", 3), ("dil_conv_5x5", 0), ("skip_connect", 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("skip_connect", 0), ("dil_conv_5x5", 1), ("max_pool_3x3", 1), ("avg_pool_3x3", 0),
            ("sep_conv_3x3", 0), ("skip_connect", 3), ("dil_conv_3x3", 2), ("sep_conv_5x5", 4)],
    reduce_concat=[2, 3, 4, 5],
)


def derived(seed, genotype=None, C=2, layers=3, classes=5, train=False):
    torch.manual_seed(seed)
    genotype = genotype or random_genotype(generator=torch.Generator().manual_seed(seed))
    net = Network(genotype, C, classes, layers, in_channels=1, mean=[0.4], std=[0.3])
    return randomize(net, seed).train(train)


def frozen(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """An independent eval-mode copy computing what the bounds bound: in train mode, BatchNorm
    with the clean batch statistics of x (captured by hooks on the per-op reference supernet)."""
    if isinstance(model, SearchNetwork) and not isinstance(model, ReferenceSearchNetwork):
        ref = ReferenceSearchNetwork(model.C, model.num_classes, model.layers, model.steps, model.multiplier,
                                     model.in_channels, partial_channels=model.partial_channels
                                     ).to(x.dtype).load_from(model)
    else:
        ref = copy.deepcopy(model)
    if not model.training:
        return ref.eval()
    stats = {}

    def hook(m, inputs, output):
        v = inputs[0]
        stats[m] = (v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False))

    handles = [m.register_forward_hook(hook) for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        ref.train()(x)
    for h in handles:
        h.remove()
    for m, (mean, var) in stats.items():
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return ref.eval()


# ----------------------------------------------------------------------------- the checker
def project(x0, xa, eps, norm, clip):
    d = xa - x0
    e = eps.view(-1, *([1] * (x0.dim() - 1)))
    if norm == "inf":
        d = torch.maximum(torch.minimum(d, e), -e)
    else:
        n = d.flatten(1).norm(dim=1).view_as(e).clamp(min=1e-30)
        d = d * torch.clamp(e / n, max=1.0)
    xa = x0 + d
    return xa.clamp(*clip) if clip is not None else xa  # clamping keeps an ℓ2 point in the ball


def sample_ball(x, eps, norm, n, gen):
    """n points per sample: uniform in the ℓ∞ box / corners, or in the ℓ2 ball / on its sphere."""
    pts = []
    for k in range(n):
        u = torch.rand((len(x), *x.shape[1:]), generator=gen) * 2 - 1
        if norm == "inf":
            d = u.sign() if k % 2 else u
        else:
            d = torch.randn(u.shape, generator=gen)
            d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            if k % 2 == 0:
                d = d * torch.rand(len(x), 1, 1, 1, generator=gen)
        pts.append(x + eps.view(-1, 1, 1, 1) * d)
    return pts


def count_violations(f, x, y, eps, norm, clip, lb, ub, mlb, seed=0, n_random=8, steps=10):
    """Violations of lb ≤ f ≤ ub and of margin ≥ mlb, by random points and PGD on each violation."""
    gen = torch.Generator().manual_seed(seed)
    eps = torch.as_tensor(eps, dtype=x.dtype).expand(len(x))
    K = lb.shape[1]

    def violation(logits, yy, lbb, ubb, mm):
        other = logits.masked_fill(torch.nn.functional.one_hot(yy, K).bool(), -float("inf"))
        margin = logits.gather(1, yy[:, None])[:, 0] - other.amax(1)
        return torch.cat([logits - ubb, lbb - logits, (mm - margin)[:, None]], dim=1)

    bad, points = 0, 0
    with torch.no_grad():
        for p in sample_ball(x, eps, norm, n_random, gen):
            p = project(x, p, eps, norm, clip)
            bad += int((violation(f(p), y, lb, ub, mlb) > TOL).sum())
            points += len(x)
    # PGD: one copy of the batch per objective (2K output bounds + the margin)
    R = 2 * K + 1
    x0, yy, e = x.repeat(R, 1, 1, 1), y.repeat(R), eps.repeat(R)
    lbb, ubb, mm = lb.repeat(R, 1), ub.repeat(R, 1), mlb.repeat(R)
    which = torch.arange(R).repeat_interleave(len(x))
    xa = project(x0, sample_ball(x0, e, norm, 1, gen)[0], e, norm, clip)
    step = 2.5 * e / steps
    for _ in range(steps):
        xa.requires_grad_(True)
        v = violation(f(xa), yy, lbb, ubb, mm).gather(1, which[:, None])[:, 0]
        (grad,) = torch.autograd.grad(v.sum(), xa)
        with torch.no_grad():
            if norm == "inf":
                xa = xa + step.view(-1, 1, 1, 1) * grad.sign()
            else:
                xa = xa + step.view(-1, 1, 1, 1) * grad / grad.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1)
            xa = project(x0, xa, e, norm, clip)
            bad += int((violation(f(xa), yy, lbb, ubb, mm) > TOL).sum())
            points += len(xa)
    CHECKED["points"] += points
    CHECKED["configs"] += 1
    return bad


def check_model(model, x, y, eps, norm, clip, methods=bounds.METHODS, seed=0):
    """Zero violations for each method; output bounds and margin from one specification
    [I; −I; e_y − e_t] (one trace per method); margin_lower_bound must agree with it."""
    f = model if not model.training else frozen(model, x)
    K = model.num_classes
    eye = torch.eye(K)
    spec = torch.cat([torch.cat([eye, -eye]).expand(len(x), 2 * K, K), bounds.margin_spec(y, K, dtype=x.dtype)], 1)
    for method in methods:
        low = bounds.spec_bounds(model, x, spec, eps, norm, method, clip=clip).detach()
        lb, ub, mlb = low[:, :K], -low[:, K : 2 * K], low[:, 2 * K :].amin(1)
        assert torch.isfinite(low).all() and (lb <= ub + TOL).all()
        if method != "crown":
            torch.testing.assert_close(margin_lower_bound(model, x, y, eps, norm, method, clip=clip).detach(), mlb)
        bad = count_violations(f, x, y, eps, norm, clip, lb, ub, mlb, seed)
        assert bad == 0, f"{bad} violations: {type(model).__name__} {norm} {method} clip={clip}"


def test_the_checker_finds_violations_of_bounds_that_are_too_tight():
    """The soundness checker can fail: bounds tightened past the truth are caught, and the CHECKED
    counters count every point it evaluated (random points and PGD iterates)."""
    net = derived(0).eval()
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2])
    lb, ub = (b.detach() for b in bounds.output_bounds(net, x, 0.1, "inf", "ibp"))
    mlb = margin_lower_bound(net, x, y, 0.1, "inf", "ibp").detach()
    before = dict(CHECKED)
    assert count_violations(net, x, y, 0.1, "inf", (0.0, 1.0), lb, ub, mlb) == 0
    mid = (lb + ub) / 2
    assert count_violations(net, x, y, 0.1, "inf", (0.0, 1.0), mid, mid, mlb) > 0  # a point box
    with torch.no_grad():
        margin = net(x).gather(1, y[:, None])[:, 0] - net(x).masked_fill(
            torch.nn.functional.one_hot(y, 5).bool(), -float("inf")).amax(1)
    assert count_violations(net, x, y, 0.1, "inf", (0.0, 1.0), lb, ub, margin + 1e-3) > 0  # above the clean margin
    per_call = len(x) * (8 + 10 * (2 * 5 + 1))  # n_random points, then PGD's steps on 2K + 1 objectives
    assert CHECKED["configs"] - before["configs"] == 3
    assert CHECKED["points"] - before["points"] == 3 * per_call


# (norm, clip) per model index, so that every combination is covered across models
BALLS = [("inf", (0.0, 1.0)), (2, None), ("inf", None), (2, (0.0, 1.0))]


# ----------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_supernet_sound(seed, train):
    """Random α, weights and BN statistics; eval (running) and train (clean-batch) BatchNorm."""
    net = supernet(seed, train=train)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    eps = [0.01, 0.1][seed] * (1 if BALLS[2 * seed + train][0] == "inf" else 3)
    check_model(net, x, torch.tensor([0, 3, 4]), eps, *BALLS[2 * seed + train], methods=("ibp", "crown-ibp"),
                seed=seed)


@pytest.mark.parametrize("train", [False, True])
def test_supernet_sound_crown(train):
    """Full CROWN (every intermediate bound by CROWN) on a 4×4 supernet, per-sample ε."""
    net = supernet(10 + train, C=2, steps=2, train=train)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    check_model(net, x, torch.tensor([1, 2]), torch.tensor([0.02, 0.08]), *BALLS[3 * train], methods=("crown",))


@pytest.mark.parametrize("norm", ["inf", 2])
def test_crown_without_forward_mode_is_sound(norm, monkeypatch):
    """Where forward-mode bounds do not fit in FORWARD_MEMORY (CIFAR at paper size) CROWN's
    intermediate bounds come from the refined intervals and backward passes alone: sound on
    supernets and derived networks too (alpha-CROWN's final pass starts from the same intermediate
    bounds; its own soundness is test_verify's)."""
    monkeypatch.setattr(forward, "FORWARD_MEMORY", 0)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([1, 3])
    for model in (supernet(12, C=2, steps=2), derived(13, ALL_OPS)):
        check_model(model, x, y, torch.tensor([0.01, 0.04]), norm, (0.0, 1.0), methods=("crown",))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_derived_network_sound(seed, train):
    """A genotype using every primitive in both cell types (reductions included) and a random one."""
    net = derived(seed, ALL_OPS if seed == 0 else None, train=train)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed + 7))
    check_model(net, x, torch.tensor([4, 0, 2]), [0.02, 0.15][seed], *BALLS[(2 * seed + train + 1) % 4], seed=seed)


def test_four_node_supernet_sound():
    """The default cell (4 nodes, concat of 4) with C=4 on 8×8 inputs, both ReLU lower slopes."""
    net = supernet(3, C=4, steps=4).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 3])
    for slope in bounds.RELU_SLOPES:
        lb, ub = output_bounds(net, x, 0.02, "inf", "crown-ibp", relu_slope=slope)
        mlb = margin_lower_bound(net, x, y, 0.02, "inf", "crown-ibp", relu_slope=slope)
        assert count_violations(net, x, y, 0.02, "inf", (0.0, 1.0), lb.detach(), ub.detach(), mlb.detach(),
                                n_random=4, steps=6) == 0


# ----------------------------------------------------------------------------- exactness
def affine_model(seed):
    """Every affine rule without a ReLU: Normalize, strided/dilated/depthwise convs, BN, avg pools
    (count_include_pad=False), identity, global average pool, flatten, linear."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        Normalize([0.5, 0.4], [0.2, 0.3]),
        nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=True),
        nn.BatchNorm2d(4),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False),
        nn.Identity(),
        nn.Conv2d(4, 6, 1, bias=False),
        nn.BatchNorm2d(6, affine=False),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )
    return randomize(model, seed).eval()


@pytest.mark.parametrize("norm", ["inf", 2])
def test_no_relu_bounds_are_exact(norm):
    model = affine_model(0)
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 3])
    eps = torch.tensor([0.01, 0.1, 0.5])
    xg = x.clone().requires_grad_(True)
    fx = model(xg)
    J = torch.stack([torch.autograd.grad(fx[:, k].sum(), xg, retain_graph=True)[0] for k in range(4)], 1)
    dual = (lambda a: a.abs().sum(-1)) if norm == "inf" else (lambda a: a.norm(dim=-1))
    radius = eps[:, None] * dual(J.flatten(2))
    fx = fx.detach()
    Jy = J[torch.arange(3), y]
    true_margin = torch.stack(
        [fx[i, y[i]] - fx[i, t] - eps[i] * dual((Jy[i] - J[i, t]).flatten()) for i in range(3) for t in range(4)
         if t != y[i]]).view(3, 3).amin(1)
    for method in bounds.METHODS:
        lb, ub = output_bounds(model, x, eps, norm, method, clip=None)
        torch.testing.assert_close(lb, fx - radius, rtol=0, atol=1e-10)
        torch.testing.assert_close(ub, fx + radius, rtol=0, atol=1e-10)
        m = margin_lower_bound(model, x, y, eps, norm, method, clip=None)
        torch.testing.assert_close(m, true_margin, rtol=0, atol=1e-10)
    # ℓ∞ with the [0, 1] box: the exact minimum over the clipped box, coordinate by coordinate
    if norm == "inf":
        lo, hi = (x - eps.view(-1, 1, 1, 1)).clamp(min=0), (x + eps.view(-1, 1, 1, 1)).clamp(max=1)
        exact_lb = fx + torch.minimum(J * (lo - x).unsqueeze(1), J * (hi - x).unsqueeze(1)).flatten(2).sum(-1)
        lb, _ = output_bounds(model, x, eps, "inf", "crown", clip=(0.0, 1.0))
        torch.testing.assert_close(lb, exact_lb, rtol=0, atol=1e-10)


def test_zero_op_gives_a_constant():
    model = nn.Sequential(Normalize([0.5], [0.2]), nn.Conv2d(1, 2, 3, padding=1), Zero(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    for method in bounds.METHODS:
        lb, ub = output_bounds(model, x, 0.3, 2, method)
        torch.testing.assert_close(lb, model(x).detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(ub, model(x).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("train", [False, True])
def test_zero_radius_bounds_equal_the_output(train):
    for net in (supernet(4, train=train), derived(4, ALL_OPS, train=train)):
        x = torch.rand(2, 1, 8, 8)
        f = frozen(net, x)(x).detach()
        for method in bounds.METHODS if isinstance(net, Network) else ("ibp", "crown-ibp"):
            lb, ub = output_bounds(net, x, 0.0, "inf", method)
            torch.testing.assert_close(lb, f, rtol=0, atol=1e-9)
            torch.testing.assert_close(ub, f, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- internals
@pytest.mark.parametrize("make", [lambda: supernet(5, steps=4), lambda: derived(5, ALL_OPS),
                                  lambda: supernet(5, C=4, steps=3, partial_channels=2)])
def test_every_affine_node_transpose_is_its_vjp(make):
    """Each affine primitive's transpose (and bias) against autograd's vector-Jacobian product."""
    net = make().eval()
    g = trace(net, torch.rand(2, 1, 8, 8))
    torch.testing.assert_close(g.values[g.output], net(g.values[0]), rtol=0, atol=1e-12)
    seen = set()
    for i in range(1, len(g.ops)):
        op = g.ops[i]
        if isinstance(op, (ReLU, MaxPool)) or not g.inputs[i]:
            continue
        zs = [torch.randn_like(g.values[j]).requires_grad_() for j in g.inputs[i]]
        out = op.forward(*zs)
        A = torch.randn((out.shape[0], 3, *out.shape[1:]))
        vjps = [torch.autograd.grad(out, zs, A[:, s], retain_graph=True) for s in range(3)]
        for k, t in enumerate(op.transpose(A, [g.shape(j) for j in g.inputs[i]])):
            torch.testing.assert_close(t, torch.stack([v[k] for v in vjps], 1), rtol=0, atol=1e-10)
        b = op.bias_term(A)
        b0 = (A * op.forward(*[torch.zeros_like(z) for z in zs]).unsqueeze(1)).flatten(2).sum(-1)
        torch.testing.assert_close(b if b is not None else torch.zeros_like(b0), b0, rtol=0, atol=1e-10)
        seen.add(type(op).__name__)
    expected = {"Conv", "ChannelAffine", "AvgPool", "Concat", "Linear", "GlobalAvgPool"}
    expected |= {"MixedEdges", "EdgeSum", "Repeat", "Slice", "Crop"} if isinstance(net, SearchNetwork) \
        else {"WeightedSum", "Crop"}
    if getattr(net, "partial_channels", 1) > 1:
        expected |= {"ChannelShuffle", "WeightedSum"}
    assert expected <= seen


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 1, 0), (5, 1, 2), (3, 2, 1), (2, 2, 0)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_average_pool_transpose_is_its_vjp(kernel, stride, padding, count_include_pad, batch):
    """AvgPool's transpose (at stride 1 a box sum: k² times an average pool, or F.conv2d where that
    pool's padding would exceed k/2; F.conv_transpose2d at other strides) against autograd's
    vector-Jacobian product, on a 7×7 map (odd, so strided windows leave pixels out)."""
    op = AvgPool(kernel, stride, padding, count_include_pad)
    z = torch.randn(batch, 2, 7, 7, requires_grad=True)
    out = op.forward(z)
    A = torch.randn((batch, 4, *out.shape[1:]))
    (t,) = op.transpose(A, [z.shape[1:]])
    vjp = torch.stack([torch.autograd.grad(out, z, A[:, s], retain_graph=True)[0] for s in range(4)], 1)
    torch.testing.assert_close(t, vjp, rtol=0, atol=1e-12)


@pytest.mark.parametrize("train", [False, True])
def test_fused_supernet_bounds_equal_reference_supernet(train):
    """The fused SearchNetwork and the per-op reference compute the same bounds (same relaxations).
    In train mode (BatchNorm on 2 images' statistics) the bounds reach 1e8 and an adaptive slope
    1[u > −l] at a tie u = −l is decided by round-off, so agreement there is to 1e-6 relative."""
    net = supernet(6, C=2, steps=4, train=train)
    ref = ReferenceSearchNetwork(2, 5, 3, 4, 4, 1).load_from(net).train(train)
    x = torch.rand(2, 1, 8, 8)
    for method, norm in (("ibp", "inf"), ("crown-ibp", "inf"), ("crown-ibp", 2)):
        a = output_bounds(net, x, 0.02, norm, method)
        b = output_bounds(ref, x, 0.02, norm, method)
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-6 if train else 1e-9, atol=1e-9)


def test_maxpool_relaxation_brackets_the_max():
    """z_j ≤ max(window) ≤ z_j + c on random boxes (the sound max-pool relaxation)."""
    op = MaxPool(3, 2, 1)
    l = torch.randn(2, 3, 6, 6)
    u = l + torch.rand(2, 3, 6, 6) * torch.randint(0, 2, (2, 3, 6, 6))
    idx, c, _ = op.relaxation(l, u)
    for _ in range(50):
        z = l + (u - l) * torch.rand(2, 3, 6, 6)
        zj = z.flatten(2).gather(2, idx)
        m = op.forward(z).flatten(2)
        assert (zj <= m + 1e-12).all() and (m <= zj + c[:, 0] + 1e-12).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maxpool_choice_ignores_round_off_ties(dtype):
    """The max pool's input j: the largest lower bound; among lower bounds equal up to a few ulps, the
    largest upper bound; among those, the first, wherever the ulps fall (windows on axis 2)."""
    ulp = torch.finfo(dtype).eps
    lw = torch.tensor([[[[1.0], [1.0 + 2 * ulp], [1.0 - 2 * ulp], [0.5]]],   # a tie: the first
                       [[[1.0], [1.0 + 2 * ulp], [1.0 - 2 * ulp], [0.5]]],   # a tie, broken by u: the third
                       [[[1.0], [1.5], [1.0], [0.5]]],                       # a clear maximum
                       [[[-3.0], [-3.0 - 8 * ulp], [2.0 + 4 * ulp], [2.0]]]], dtype=dtype)
    uw = torch.tensor([[[[2.0], [2.0], [2.0 - 4 * ulp], [9.0]]],
                       [[[2.0], [2.0], [3.0], [9.0]]],
                       [[[2.0], [2.0], [3.0], [9.0]]],
                       [[[0.0], [0.0], [2.5], [2.5 + 4 * ulp]]]], dtype=dtype)
    assert window_choice(lw, uw).view(-1).tolist() == [0, 2, 1, 2]


@pytest.mark.parametrize("B,S,per_row_slopes", [(1, 1, False), (1, 7, False), (3, 5, False), (1, 4, True), (2, 4, True)])
def test_relu_backward_on_few_unstable_neurons_is_the_dense_rule(B, S, per_row_slopes):
    """For one image with few unstable neurons _relu_backward updates only their columns (batches
    keep the dense rule); Λ_z, the bias and their gradients (to Λ, to the bounds [l, u] as in the
    CB term, and to α-CROWN's per-row slopes) equal the dense rule's Λ⁺·a_l + Λ⁻·a_u, Σ Λ⁻·b_u —
    also where a_u rounds to 1 but b_u > 0."""
    f32 = {"dtype": torch.float32}
    gen = torch.Generator().manual_seed(B * 10 + S)
    l = torch.randn(B, 3, 4, 4, generator=gen, **f32) + 2.0 * torch.sign(torch.randn(B, 3, 4, 4, generator=gen, **f32))
    u = l + 0.1
    l[:, 0, 0, :2], u[:, 0, 0, :2] = -0.3, 0.5  # unstable
    l[:, 1, 2, 3], u[:, 1, 2, 3] = -1e-9, 1.0  # unstable, a_u = 1 in float32 rounding but b_u > 0
    l, u = l.requires_grad_(), u.requires_grad_()
    sl, su, bu = (t.unsqueeze(1) for t in bounds.relu_relaxation(l, u))
    assert bool((su[:, :, 1, 2, 3] == 1).all() and (bu[:, :, 1, 2, 3] > 0).all())
    assert 4 * int(((l < 0) & (u > 0)).any(0).sum()) <= l[0].numel()  # few enough for the column update
    inputs = [l, u]
    if per_row_slopes:  # as in _Bounder.optimized_lower
        slopes = torch.rand(B, S, 3, 4, 4, generator=gen, **f32).requires_grad_()
        sl = torch.where((su > 0) & (su < 1), slopes, sl)
        inputs.append(slopes)
    A = torch.randn(B, S, 3, 4, 4, generator=gen, requires_grad=True, **f32)
    out, bias = ReLU().backward(A, (sl, su, bu))
    dense = A * torch.where(A >= 0, sl, su), (A.clamp(max=0) * bu).flatten(2).sum(-1)
    torch.testing.assert_close(out, dense[0], rtol=0, atol=0)  # the same products, column by column
    torch.testing.assert_close(bias, dense[1])
    w = torch.randn(out.shape, generator=gen, **f32)
    ours = torch.autograd.grad((out * w).sum() + bias.sum(), [A, *inputs], retain_graph=True)
    ref = torch.autograd.grad((dense[0] * w).sum() + dense[1].sum(), [A, *inputs])
    for g_ours, g_ref in zip(ours, ref):
        torch.testing.assert_close(g_ours, g_ref)
    assert ours[1].abs().sum() > 0  # the bounds do get a gradient (through the unstable neurons)


def test_crown_refines_only_relaxations_a_tighter_bound_could_decide():
    """A 2×2 max-pool window is refined (its argmax j by l and every i with u_i > l_j, at both ends)
    only when one input attains its maximum alone at the clean point; a window tied at x (a constant
    background) and a ReLU input that is 0 at x stay open under any bound, so CROWN spends nothing
    on them."""
    op = MaxPool(2, 2, 0)
    v = torch.tensor([[[[1.0, 0.9, 0.5, 0.5], [0.1, 0.0, 0.5, 0.5]]]])  # left window: unique max; right: a tie
    l, u = v - 0.15, v + 0.15
    low, up = op.undecided(l, u, v)
    assert low.tolist() == up.tolist() == [[[[True, True, False, False], [False, False, False, False]]]]
    g = bounds.trace(nn.Sequential(nn.ReLU()), v)
    bd = BoundState(g, Ball(g.values[0], torch.full((1, 1, 1, 1), 0.1), "inf", None), "adaptive")
    low, up = undecided(bd, 0, l, u)
    assert low.tolist() == up.tolist() == [[[[False, False, False, False], [True, False, False, False]]]]


# ----------------------------------------------------------------------------- tightness
def test_crown_is_tighter_than_ibp_on_average():
    widths = {m: 0.0 for m in bounds.METHODS}
    for seed in range(3):
        net = derived(20 + seed, C=2)
        x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
        for m in bounds.METHODS:
            lb, ub = output_bounds(net, x, 0.01, "inf", m)
            widths[m] += float((ub - lb).detach().mean())
    assert widths["crown"] <= widths["ibp"]
    assert widths["crown"] <= widths["crown-ibp"] * (1 + 1e-9)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("method,train", [("crown-ibp", True), ("crown-ibp", False), ("ibp", True), ("crown", False)])
def test_gradients_match_finite_differences(method, train):
    """d/dh of the margin bound along a random direction in (weights, α), float64 central FD.
    The bound is piecewise smooth (ReLU slopes, max-pool argmax switch at kinks), so h is small."""
    net = supernet(7, C=2, steps=2, train=train)
    H = 4 if method == "crown" else 8
    x = torch.rand(2, 1, H, H, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 4])
    params = list(net.parameters())
    gen = torch.Generator().manual_seed(2)
    v = [torch.randn(p.shape, generator=gen) for p in params]

    def value():
        return margin_lower_bound(net, x, y, 0.01, "inf", method).sum()

    grads = torch.autograd.grad(value(), params, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, v) if g is not None)
    assert grads[[n for n, _ in net.named_parameters()].index("alphas_normal")] is not None
    h, vals = 1e-7, []
    with torch.no_grad():
        for sgn in (1, -1):
            for p, d in zip(params, v):
                p.add_(sgn * h * d)
            vals.append(float(value()))
            for p, d in zip(params, v):
                p.sub_(sgn * h * d)
    fd = (vals[0] - vals[1]) / (2 * h)
    assert abs(fd - analytic) <= 1e-4 * max(1.0, abs(fd)), (fd, analytic)


# ----------------------------------------------------------------------------- the dsrna_cb term
def test_head_of_a_trace_bounds_the_network_with_the_whole_batch_statistics():
    """Bounding the first n samples of a traced batch = bounding the network whose BatchNorms hold
    the whole batch's statistics (not the n samples' own)."""
    net = supernet(3, C=2, steps=2, train=True)
    x, y = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3, 4, 0])
    head = trace(net, x).head(2)
    got = margin_lower_bound(net, x[:2], y[:2], 0.01, 2, "crown-ibp", graph=head)
    want = margin_lower_bound(frozen(net, x), x[:2], y[:2], 0.01, 2, "crown-ibp")
    # rtol: the per-op copy rounds differently, which can flip an adaptive ReLU slope where u = −l
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    own = margin_lower_bound(net, x[:2], y[:2], 0.01, 2, "crown-ibp")
    assert not torch.allclose(own, got)
    with pytest.raises(ValueError, match="graph must be a trace of the model on x"):
        margin_lower_bound(net, x[:3], y[:3], 0.01, graph=head)
    with pytest.raises(ValueError, match="n must be in 1..6"):
        trace(net, x).head(7)


@pytest.mark.parametrize("statistics", robustness.STATISTICS)
@pytest.mark.parametrize("squash", robustness.SQUASHES)
def test_cb_term_is_the_squashed_mean_margin_bound(squash, statistics):
    """R_CB = mean φ(m) over the first ``samples`` images, m from an independent eval-mode copy
    holding the statistics of the bounded images or of the whole batch; with the whole batch's,
    the term also gives the train-mode forward's logits."""
    net = supernet(4, C=2, steps=2, train=True)
    x, y = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([4, 3, 2, 1, 0, 1])
    tau = 1e5 if squash == "tanh" else 0.5  # these random nets' margin bounds are around −1e4
    term = TERMS["dsrna_cb"](eps=0.003, norm=2, samples=4, squash=squash, scale=tau, statistics=statistics)
    r = term(net, x, y)
    m = margin_lower_bound(frozen(net, x if statistics == "batch" else x[:4]), x[:4], y[:4], 0.003, 2, "crown-ibp")
    want = torch.tanh(m / tau).mean() if squash == "tanh" else (m / (tau + m.abs().mean() + m.abs())).mean()
    torch.testing.assert_close(r, want, rtol=1e-5, atol=1e-9)
    assert -1 < float(r.detach()) < 1
    if statistics == "batch":
        logits, r2 = term.with_logits(net, x, y)
        torch.testing.assert_close(r2, r)
        torch.testing.assert_close(logits, net(x), rtol=1e-9, atol=1e-12)
    else:
        assert not hasattr(term, "with_logits")
    everything = TERMS["dsrna_cb"](eps=0.003, norm=2, samples=None, squash=squash, scale=tau,
                                   statistics=statistics)(net, x, y)
    assert everything.shape == () and float(everything.detach()) != float(r.detach())


@pytest.mark.parametrize("statistics", robustness.STATISTICS)
def test_cb_term_gradient_matches_finite_differences(statistics):
    """∂R_CB along a random direction in (w, α) vs central differences, with the normalising scale
    s held at its value at the base point (R stops the gradient through s)."""
    net = supernet(7, C=2, steps=2, train=True)
    x, y = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 4, 0, 2])
    term = TERMS["dsrna_cb"](eps=0.01, samples=2, statistics=statistics)
    params = list(net.parameters())
    grads = torch.autograd.grad(term(net, x, y), params, allow_unused=True)
    assert grads[[n for n, _ in net.named_parameters()].index("alphas_normal")] is not None

    def margins():
        graph = trace(net, x).head(2) if statistics == "batch" else None
        return margin_lower_bound(net, x[:2], y[:2], 0.01, "inf", "crown-ibp", graph=graph)

    s0 = 1.0 + margins().detach().abs().mean()
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, v) if g is not None)
    h, vals = 1e-7, []
    with torch.no_grad():
        for sgn in (1, -1):
            for p, d in zip(params, v):
                p.add_(sgn * h * d)
            m = margins()
            vals.append(float((m / (s0 + m.abs())).mean()))
            for p, d in zip(params, v):
                p.sub_(sgn * h * d)
    fd = (vals[0] - vals[1]) / (2 * h)
    assert abs(fd - analytic) <= 1e-4 * max(1e-3, abs(fd)), (fd, analytic)


def test_cb_search_step_moves_alpha_and_records_robustness():
    data = load_dataset("digits", True, limit=96)
    train_half, val_half = search_split(data, 0)
    torch.manual_seed(0)
    model = SearchNetwork(4, 10, 3, in_channels=1).float()
    alpha0 = model.alphas_reduce.detach().clone()
    config = SearchConfig(method="dsrna_cb", epochs=1, batch_size=24, gamma=1.0, gamma_w=0.1,
                          method_options={"eps": 0.01, "samples": 4})
    result = search(model, train_half, val_half, config, progress=False)
    r = result.history[0]["robustness"]
    assert isinstance(r, float) and -1 < r < 1
    assert not torch.equal(model.alphas_reduce.detach(), alpha0)


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": 0}, "eps must be > 0"), ({"norm": 1}, "unknown norm 1"), ({"method": "deeppoly"}, "unknown bound method"),
    ({"samples": 0}, "samples must be a positive integer"), ({"squash": "relu"}, "unknown squash 'relu'"),
    ({"scale": 0}, "scale must be > 0"), ({"statistics": "running"}, "unknown statistics 'running'"),
])
def test_cb_term_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TERMS["dsrna_cb"](**kwargs)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_give_clear_errors():
    net = derived(0)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        output_bounds(net, x, -0.1)
    with pytest.raises(ValueError, match="eps"):
        output_bounds(net, x, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="norm"):
        output_bounds(net, x, 0.1, norm=1)
    with pytest.raises(ValueError, match="method"):
        output_bounds(net, x, 0.1, method="deeppoly")
    with pytest.raises(ValueError, match="relu_slope"):
        output_bounds(net, x, 0.1, relu_slope="zero")
    with pytest.raises(ValueError, match="clip"):
        output_bounds(net, x, 0.1, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="x must be"):
        output_bounds(net, x[0], 0.1)
    with pytest.raises(ValueError, match="labels"):
        margin_lower_bound(net, x, torch.tensor([0, 5]), 0.1)
    with pytest.raises(ValueError, match="differ"):
        margin_lower_bound(net, x, y, 0.1, targets=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="no rule for module"):
        output_bounds(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 2)), x, 0.1)


@pytest.mark.parametrize("bound", ["output", "margin"])
def test_non_finite_or_unscaled_pixels_are_refused(bound):
    """NaN / ±inf pixels and images in 0–255 (not pixel units) are refused with their own message,
    whichever the method; with clip=None the same 0–255 images are bounded (the clip check refused them)."""
    net = derived(0)
    x, y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])

    def bound_of(images, **kw):
        if bound == "output":
            return output_bounds(net, images, 0.01, **kw)
        return margin_lower_bound(net, images, y, 0.01, **kw)

    for bad in (float("nan"), float("inf"), -float("inf")):
        xb = x.clone()
        xb[1, 0, 3, 4] = bad
        for method in ("ibp", "crown-ibp", "crown"):
            with pytest.raises(ValueError, match="NaN or infinite"):
                bound_of(xb, method=method)
    for method in ("ibp", "crown-ibp", "crown"):
        with pytest.raises(ValueError, match=r"outside the clip box \(0\.0, 1\.0\)"):
            bound_of(x * 255, method=method)
    with pytest.raises(ValueError, match="outside the clip box"):
        bound_of(x * 255, norm=2)
    unclipped = bound_of(x * 255, clip=None)  # the refusal above came from the clip-box check
    assert all(bool(torch.isfinite(t).all()) for t in (unclipped if bound == "output" else (unclipped,)))
    assert all(bool(torch.isfinite(t).all()) for t in ((bound_of(x),) if bound == "margin" else bound_of(x)))


# ----------------------------------------------------------------------------- partial channels (PC-DARTS)
@pytest.mark.parametrize("train", [False, True])
def test_partial_channel_supernet_sound(train):
    """K = 2 (normal cells 1 of 2 channels, reductions with max-pooled bypass), random α and β:
    no violation at sampled and PGD points, and the margin bound below falsify_margin's minimum."""
    from rnas_lib.verify import falsify_margin

    net = supernet(20 + train, C=2, steps=3, train=train, partial_channels=2)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(21))
    y = torch.tensor([2, 0, 4])
    eps, (norm, clip) = (0.02, BALLS[0]) if train else (0.1, BALLS[1])
    check_model(net, x, y, eps, norm, clip, methods=("ibp", "crown-ibp"), seed=int(train))
    f = frozen(net, x)
    found = falsify_margin(f, x, y, eps, norm, n_random=16, steps=20, generator=torch.Generator().manual_seed(0))
    for method in ("ibp", "crown-ibp"):
        assert (margin_lower_bound(net, x, y, eps, norm, method) <= found + TOL).all()


def test_partial_channel_zero_radius_bounds_equal_the_output():
    net = supernet(22, C=4, steps=3, train=True, partial_channels=4)
    x = torch.rand(2, 1, 8, 8)
    f = frozen(net, x)(x).detach()
    torch.testing.assert_close(net(x).detach(), f, rtol=0, atol=1e-9)
    for method in ("ibp", "crown-ibp"):
        lb, ub = output_bounds(net, x, 0.0, "inf", method)
        torch.testing.assert_close(lb, f, rtol=0, atol=1e-9)
        torch.testing.assert_close(ub, f, rtol=0, atol=1e-9)


def test_partial_channel_cb_term_has_beta_gradients():
    net = supernet(23, C=2, steps=2, train=True, partial_channels=2)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    r = TERMS["dsrna_cb"](eps=0.01)(net, x, y)
    grads = torch.autograd.grad(r, net.arch_parameters())
    assert len(grads) == 4 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------------- the radius as R
def test_implicit_radius_gradient_matches_finite_differences_of_the_bisected_radius():
    """ρ(α) = ε* where the CROWN-IBP margin bound crosses 0; ∇ρ by the implicit function theorem
    equals central differences of the radius found by a 40-step bisection (below float32's resolution), per
    certified image."""
    net = supernet(3, C=2, steps=2, train=False)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[-1] = (y[-1] + 1) % 5
    alpha = net.arch_parameters()[0]
    rho = bounds.implicit_radius(net, x, y, "inf", "crown-ibp", eps_max=0.1, iters=40)
    assert (rho[:-1] > 0).all() and rho[-1] < 0  # the misclassified image has a negative signed radius
    with torch.no_grad():
        torch.testing.assert_close(margin_lower_bound(net, x[:-1], y[:-1], rho[:-1].detach(), "inf", "crown-ibp"),
                                   torch.zeros(3), atol=1e-9, rtol=0)
    d = torch.randn(alpha.shape, generator=torch.Generator().manual_seed(1))
    analytic = torch.stack([torch.autograd.grad(rho[k], alpha, retain_graph=True)[0].mul(d).sum() for k in range(3)])
    h = 1e-6
    radii = []
    for sign in (1, -1):
        with torch.no_grad():
            alpha += sign * h * d
            radii.append(bounds.implicit_radius(net, x, y, "inf", "crown-ibp", eps_max=0.1, iters=40)[:-1])
            alpha -= sign * h * d
    torch.testing.assert_close(analytic, (radii[0] - radii[1]) / (2 * h), rtol=1e-5, atol=1e-9)


def test_implicit_radius_below_the_first_floor_is_the_root():
    """Radii below eps_max·1e-6 (the tutorial demo network's CROWN-IBP radii are ~1e-8): the
    bisection continues down to max(eps_max·1e-15, 8 ulps of 1), so ρ is still the root of the
    margin bound and its gradient the implicit one."""
    net = supernet(3, C=2, steps=2, train=False).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps_max = 1e4  # the first floor, 1e-2, lies above every radius here
    rho = bounds.implicit_radius(net, x, y, "inf", "crown-ibp", eps_max=eps_max, iters=30)
    assert (rho > 0).all() and (rho < eps_max * 1e-6).all(), rho
    with torch.no_grad():
        torch.testing.assert_close(margin_lower_bound(net, x, y, rho.detach(), "inf", "crown-ibp"),
                                   torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    alpha = net.arch_parameters()[0]
    d = torch.randn(alpha.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    analytic = torch.stack([torch.autograd.grad(rho[k], alpha, retain_graph=True)[0].mul(d).sum() for k in range(3)])
    h, radii = 1e-6, []
    for sign in (1, -1):
        with torch.no_grad():
            alpha += sign * h * d
            radii.append(bounds.implicit_radius(net, x, y, "inf", "crown-ibp", eps_max=eps_max, iters=30))
            alpha -= sign * h * d
    torch.testing.assert_close(analytic, (radii[0] - radii[1]) / (2 * h), rtol=1e-4, atol=1e-12)
    with torch.no_grad():  # float32 goes down to 8 ulps of 1 (~1e-6), below these radii
        r32 = bounds.implicit_radius(copy.deepcopy(net).float(), x.float(), y, "inf", "crown-ibp", eps_max=eps_max)
    torch.testing.assert_close(r32.double(), rho.detach(), rtol=1e-3, atol=0)


def test_cb_radius_objective_is_the_mean_radius_over_eps():
    net = supernet(4, C=2, steps=2, train=True)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(3))
    r = TERMS["dsrna_cb"](eps=0.01, objective="radius", samples=4)(net, x, y)
    expected = bounds.implicit_radius(net, x[:4], y[:4], "inf", "crown-ibp", eps_max=1.0).mean() / 0.01
    torch.testing.assert_close(r, expected)
    (g,) = torch.autograd.grad(r, net.arch_parameters()[0])
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    with pytest.raises(ValueError, match="objective"):
        TERMS["dsrna_cb"](objective="area")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows, ci, co, k, padding, dilation, size",
                         [(1, 6, 1, 3, (2, 2), (1, 1), 4), (5, 24, 1, 3, (2, 2), (1, 1), 8),
                          (3, 12, 3, (3, 5), (1, 3), (1, 1), 7), (2, 8, 2, 3, (2, 1), (2, 1), 6),
                          (4, 8, 2, 3, (0, 0), (1, 1), 5)])
def test_conv_by_taps_is_the_convolution(dtype, rows, ci, co, k, padding, dilation, size):
    """The channel-contraction-then-shift convolution (the transposed stem conv of every backward
    pass) against F.conv2d: odd and even kernels, dilation, padding below and above the kernel's reach."""
    g = torch.Generator().manual_seed(rows * ci)
    k = (k, k) if isinstance(k, int) else k
    a = torch.randn(rows, ci, size, size + 1, generator=g, dtype=dtype)
    w = torch.randn(co, ci, *k, generator=g, dtype=dtype)
    ref = torch.nn.functional.conv2d(a, w, None, 1, padding, dilation)
    out = conv_by_taps(a, w, padding, dilation)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_conv_by_taps_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    for rows in (1, 3):
        a = torch.randn(rows, 6, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(2, 6, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, w: conv_by_taps(a, w, (2, 1), (1, 1)), (a, w))


@pytest.mark.parametrize("ci, co, k, stride, padding, dilation, groups, size",
                         [(6, 1, 3, 1, 1, 1, 1, 5),  # the stem's transpose: by taps
                          (4, 6, 1, 1, 0, 1, 1, 6),  # pointwise: a matmul
                          (4, 6, 1, 2, 0, 1, 1, 7),  # strided pointwise (FactorizedReduce), odd size: strided matmul
                          (4, 6, 1, 2, 0, 1, 1, 8),
                          (4, 4, 3, 2, 1, 1, 4, 7),  # strided depthwise: conv_transpose2d
                          (4, 4, 5, 1, 4, 2, 4, 8),  # dilated depthwise: conv2d
                          (3, 6, 3, 1, 1, 1, 1, 6)])  # few channels to many: conv2d
def test_conv_transpose_is_its_vjp_on_every_path(ci, co, k, stride, padding, dilation, groups, size):
    """_Conv.transpose against autograd's vector-Jacobian product of conv2d, for each way it is computed,
    with one row and with several."""
    g = torch.Generator().manual_seed(ci * co + k)
    w = torch.randn(co, ci // groups, k, k, generator=g)
    op = Conv(w, None, stride, padding, dilation, groups)
    for rows in (1, 3):
        z = torch.randn(2, ci, size, size, generator=g, requires_grad=True)
        out = torch.nn.functional.conv2d(z, w, None, stride, padding, dilation, groups)
        torch.testing.assert_close(op.forward(z), out, rtol=0, atol=1e-12)
        A = torch.randn(2, rows, *out.shape[1:], generator=g)
        vjp = torch.stack([torch.autograd.grad(out, z, A[:, r], retain_graph=True)[0] for r in range(rows)], 1)
        torch.testing.assert_close(op.transpose(A, [z.shape[1:]])[0], vjp, rtol=0, atol=1e-12)
