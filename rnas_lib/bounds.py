"""Certified bounds on a network's outputs over an ε-ball: IBP, CROWN-IBP and CROWN.

For an input x (pixels) and the ball  B = {x' : ‖x' − x‖_p ≤ ε}  (p = ∞ or 2, ε in pixel units,
optionally intersected with the image box [0, 1]), rnas bounds every output f_k(x') and the
classification margin  m(x') = min_{t≠y} f_y(x') − f_t(x')  from below (and above) for all x' ∈ B.

The network is first *traced* into a graph of primitive nodes, computing the clean activations on
x as it goes. Every node is affine in its inputs (convolutions — depthwise, dilated, strided —,
BatchNorm as a fixed per-channel affine map, Normalize, average pools, identity, zero, channel
slices and concatenations, the α-weighted sum Σ_o softmax(α)_o · o(x) of a mixed edge, node sums,
FactorizedReduce's one-pixel crop, global average pool, the linear head) except **ReLU** and
**max pool**. BatchNorm uses its running statistics in eval mode; in train mode (during search)
it uses the statistics of the *clean* batch x, computed once and held constant over the ball, so
the bounded function is the network with those statistics frozen. Drop path is ignored (the
bounded network is the deterministic one).

Methods
-------
``ibp``        interval bound propagation: for an affine map y = Wz + b and z ∈ [z̲, z̄],
               y ∈ W·mid ± |W|·rad (mid, rad the centre and radius); ReLU and max pool are
               monotone, so they map interval ends to interval ends. The margin is computed on the
               margin itself: the specification rows c = e_y − e_t are propagated backward through
               the affine block after the last ReLU / max pool (exact there) and concretised on the
               intervals of that block's inputs.
``crown-ibp``  one backward linear-relaxation pass from the specification to the input, with the
               ReLU / max-pool relaxations built from IBP intermediate bounds.
``crown-forward``  the same final backward pass, with intermediate bounds from *forward-mode*
               linear bounds: every node carries a lower and an upper linear function of the input
               (pushed through affine nodes as centre ± radius, through ReLU / max pool by their
               relaxations), concretised on the ball and intersected with the intervals. Its cost
               grows with the number of input pixels, not of neurons: a fraction of a second at
               8×8, seconds at 28×28.
``crown``      full CROWN: the intermediate bounds of ``crown-forward`` (where they fit in
               FORWARD_MEMORY; else the intervals) refined, for every neuron whose relaxation they
               leave undecided and a tighter bound could decide (unstable ReLU inputs, candidates of
               undominated max-pool windows with a unique maximum at x), by a CROWN backward pass to
               the input; stable neurons are relaxed exactly whatever their bounds. Cost ∝ number
               of undecided neurons × depth.
``alpha-crown``  ``crown`` with the lower ReLU slopes of the final pass optimised per specification
               row (projected Adam on the bound; every slope in [0, 1] is sound).
The final margin bound of every method is the larger of its linear bound and the IBP bound on the
same (refined) intervals: both are sound lower bounds, so their maximum is.
For an ℓ2 ball, nodes that are one convolution of the input (Normalize → stem conv → BN) get the
exact ℓ2 interval f(x) ± ε‖row‖₂; every linear bound is concretised with the ℓ2 dual norm.
``margin_certificate`` also returns the radius r ≤ ε certified by the linear bound built for the
ε-ball (relaxations sound on a ball are sound on every smaller one); ``implicit_radius`` makes the
certified radius differentiable (implicit function theorem); ``block_widths`` says where the
bound loosens.

Backward pass: a lower bound  c·f(x') ≥ Λ·x' + β  is built node by node in reverse topological
order. Through an affine node y = L(z) + b:  Λ_z += Λ_y·L (the transpose of L), β += Λ_y·b.
Through ReLU with pre-activation bounds [l, u] (triangle relaxation):
    l ≥ 0: relu(z) = z;   u ≤ 0: relu(z) = 0;
    else   a_l·z ≤ relu(z) ≤ u/(u−l)·(z − l)  with  a_l = 1[u > −l] (CROWN-adaptive, default)
           or a_l = u/(u−l) (Fast-Lin);
positive coefficients take the lower line, negative ones the upper line.
Through max pool over a window W with input bounds [l_i, u_i]: let j = argmax_i l_i; then
    z_j ≤ max_i z_i ≤ z_j + max(0, max_{i≠j} u_i − l_j)
(sound: if the max is some z_k, k ≠ j, then z_k ≤ u_k ≤ l_j + c ≤ z_j + c), exact when z_j
dominates the window. Both lines have slope 1 on z_j, so only the offset depends on the sign.
Concretisation at the input (dual norms):
    ℓ∞:  min_{x'∈B} Λ·x' = Λ·x − ε‖Λ‖₁  (with the [0, 1] box: Λ·mid − |Λ|·rad of the clipped box)
    ℓ2:  min_{x'∈B} Λ·x' = Λ·x − ε‖Λ‖₂  (with the box: the larger of this and the bound over the
         clipped ℓ∞ box of radius ε, which contains B ∩ [0, 1]ⁿ — both are sound).
Specification rows are folded into the batch: a tensor Λ has shape (B, S, *node shape).
Everything is plain differentiable torch: the bounds have gradients w.r.t. weights, α and ε.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import check_norm
from .network import Cell, Network
from .ops import PRIMITIVES, DilConv, FactorizedReduce, Identity, Normalize, ReLUConvBN, SepConv, Zero
from .reference import ReferenceCell
from .supernet import AVG, FUSED, MAX, SKIP, SearchCell, SearchNetwork, SourceEdges

NORMS = ("inf", 2)
METHODS = ("ibp", "crown-ibp", "crown-forward", "crown", "alpha-crown")
RELU_SLOPES = ("adaptive", "fast-lin")


# --------------------------------------------------------------------------- affine primitives
def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _rows(A: torch.Tensor) -> torch.Tensor:
    """(B, S, *shape) → (B·S, *shape)."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:])


def _unrows(a: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return a.view(A.shape[0], A.shape[1], *a.shape[1:])


class _Affine:
    """y = L(z₁, …, z_k) + b. ``forward`` computes y, ``linear`` applies L (no bias), ``abs_linear``
    applies |L|, ``transpose`` maps Λ_y to (Λ_{z₁}, …), ``bias_term`` gives Λ_y·b (shape (B, S)) or None."""

    def linear(self, *zs):
        return self.forward(*zs)

    def abs_linear(self, *rads):
        raise NotImplementedError

    def bias_term(self, A):
        return None


class _Conv(_Affine):
    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        self.w, self.b, self.groups = weight, bias, groups
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)

    def forward(self, z):
        y = self.linear(z)
        return y if self.b is None else y + self.b.view(-1, 1, 1)

    def linear(self, z):
        return _conv2d(z, self.w, self.stride, self.padding, self.dilation, self.groups)

    def abs_linear(self, r):
        return _conv2d(r, self.w.abs(), self.stride, self.padding, self.dilation, self.groups)

    def transpose(self, A, in_shapes):
        a = _rows(A)
        k = self.w.shape[-2:]
        # the transpose of a stride-1 convolution is a convolution with the flipped, group-transposed kernel
        g, (co, ci) = self.groups, self.w.shape[:2]
        wt = self.w.view(g, co // g, ci, *k).transpose(1, 2).reshape(g * ci, co // g, *k).flip(-1, -2)
        if self.stride == (1, 1) and all(self.dilation[d] * (k[d] - 1) >= self.padding[d] for d in range(2)):
            # (faster than conv_transpose2d on CPU, markedly so for dilated depthwise kernels)
            pad = tuple(self.dilation[d] * (k[d] - 1) - self.padding[d] for d in range(2))
            if g == 1 and math.prod(k) > 1 and 4 * wt.shape[0] <= wt.shape[1]:
                return [_unrows(_conv_by_taps(a, wt, pad, self.dilation), A)]
            return [_unrows(_conv2d(a, wt, (1, 1), pad, self.dilation, g), A)]
        if k == (1, 1) and self.padding == (0, 0) and g == 1:
            # a strided pointwise kernel (DARTS' FactorizedReduce) reads every s-th pixel: its transpose
            # writes the pointwise transpose of a there (3–8× faster than conv_transpose2d), zeros elsewhere
            z = a.new_zeros(len(a), ci, *in_shapes[0][-2:])
            z[:, :, :: self.stride[0], :: self.stride[1]] = _conv2d(a, wt, (1, 1), (0, 0), (1, 1), 1)
            return [_unrows(z, A)]
        out_pad = tuple(
            in_shapes[0][-2 + d] - ((a.shape[-2 + d] - 1) * self.stride[d] - 2 * self.padding[d]
                                     + self.dilation[d] * (k[d] - 1) + 1)
            for d in range(2)
        )
        z = F.conv_transpose2d(a, self.w, None, self.stride, self.padding, out_pad, self.groups, self.dilation)
        return [_unrows(z, A)]

    def bias_term(self, A):
        return None if self.b is None else (A.sum((-1, -2)) * self.b).sum(-1)


def _conv2d(z, w, stride, padding, dilation, groups):
    """F.conv2d without bias; a pointwise (1×1, stride 1, unpadded, one group) kernel as a batched
    matmul W·z over the pixels, which on a CPU is 1–7× faster than conv2d for these small maps."""
    if w.shape[-2:] == (1, 1) and stride == (1, 1) and padding == (0, 0) and groups == 1:
        R, ci, H, W = z.shape
        return torch.matmul(w.view(w.shape[0], ci), z.reshape(R, ci, H * W)).view(R, -1, H, W)
    return F.conv2d(z, w, None, stride, padding, dilation, groups)


def _conv_by_taps(a, w, padding, dilation):
    """F.conv2d(a, w, padding=padding, dilation=dilation), stride 1, one group, computed as one
    channel contraction for all taps, z_t = W_t·a (a batched matmul), then out = Σ_t shift_t(z_t).
    For a kernel that maps many channels to few (the transpose of a stem convolution, ending every
    backward pass at the image) this is 6× (float32) to 30× (float64) faster than F.conv2d on a CPU."""
    R, ci, H, W = a.shape
    co, _, kh, kw = w.shape
    Ho, Wo = H + 2 * padding[0] - dilation[0] * (kh - 1), W + 2 * padding[1] - dilation[1] * (kw - 1)
    z = torch.matmul(w.permute(2, 3, 0, 1).reshape(kh * kw * co, ci), a.reshape(R, ci, H * W))
    z = z.view(R, kh, kw, co, H, W)
    out = a.new_zeros(R, co, Ho, Wo)
    for i in range(kh):
        for j in range(kw):  # out[y, x] += z_ij[y + i·d − p, x + j·d − p] where that pixel exists
            dy, dx = i * dilation[0] - padding[0], j * dilation[1] - padding[1]
            y0, y1, x0, x1 = max(0, -dy), min(Ho, H - dy), max(0, -dx), min(Wo, W - dx)
            if y0 < y1 and x0 < x1:
                out[:, :, y0:y1, x0:x1] += z[:, i, j, :, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
    return out


class _Linear(_Affine):
    def __init__(self, weight, bias=None):
        self.w, self.b = weight, bias

    def forward(self, z):
        return F.linear(z, self.w, self.b)

    def linear(self, z):
        return F.linear(z, self.w)

    def abs_linear(self, r):
        return F.linear(r, self.w.abs())

    def transpose(self, A, in_shapes):
        return [A @ self.w]

    def bias_term(self, A):
        return None if self.b is None else A @ self.b


class _ChannelAffine(_Affine):
    """y = scale_c · z + shift_c per channel (BatchNorm with fixed statistics, Normalize)."""

    def __init__(self, scale, shift):
        self.scale, self.shift = scale.view(-1, 1, 1), shift.view(-1, 1, 1)

    def forward(self, z):
        return z * self.scale + self.shift

    def linear(self, z):
        return z * self.scale

    def abs_linear(self, r):
        return r * self.scale.abs()

    def transpose(self, A, in_shapes):
        return [A * self.scale]

    def bias_term(self, A):
        return (A.sum((-2, -1)) * self.shift.view(-1)).sum(-1)


class _AvgPool(_Affine):
    """k×k average pool; with count_include_pad=False each window divides by its valid count."""

    def __init__(self, kernel, stride, padding, count_include_pad):
        self.k, self.s, self.p = _pair(kernel), _pair(stride), _pair(padding)
        self.cip = count_include_pad

    def forward(self, z):
        return F.avg_pool2d(z, self.k, self.s, self.p, count_include_pad=self.cip)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        H, W = in_shapes[0][-2:]
        ones = A.new_ones(1, 1, H, W)
        if self.cip:
            divisor = float(self.k[0] * self.k[1])
        else:  # number of valid pixels in each window
            divisor = F.avg_pool2d(ones, self.k, self.s, self.p, count_include_pad=True) * (self.k[0] * self.k[1])
        a = _rows(A / divisor)
        Ho, Wo = a.shape[-2:]
        out_pad = tuple(
            (H, W)[d] - ((a.shape[-2 + d] - 1) * self.s[d] - 2 * self.p[d] + self.k[d]) for d in range(2)
        )
        z = F.conv_transpose2d(a.reshape(-1, 1, Ho, Wo), A.new_ones(1, 1, *self.k), None, self.s, self.p, out_pad)
        return [z.view(A.shape[0], A.shape[1], -1, H, W)]


class _GlobalAvgPool(_Affine):
    def forward(self, z):
        return z.mean((-2, -1))

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        H, W = in_shapes[0][-2:]
        return [(A / (H * W))[..., None, None].expand(*A.shape, H, W).contiguous()]


class _Repeat(_Affine):
    """Channels tiled n times: output channel e·C + c is input channel c."""

    def __init__(self, n):
        self.n = n

    def forward(self, z):
        return z.repeat(1, self.n, 1, 1)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A.view(A.shape[0], A.shape[1], self.n, -1, *A.shape[-2:]).sum(2)]


class _Slice(_Affine):
    """Channels [start, stop) of the input."""

    def __init__(self, start, stop):
        self.start, self.stop = start, stop

    def forward(self, z):
        return z[:, self.start : self.stop]

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [F.pad(A, (0, 0, 0, 0, self.start, in_shapes[0][0] - self.stop))]


class _Crop(_Affine):
    """z[:, :, 1:, 1:] (FactorizedReduce's shifted grid)."""

    def forward(self, z):
        return z[:, :, 1:, 1:]

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [F.pad(A, (1, 0, 1, 0))]


class _Concat(_Affine):
    """Channel concatenation; with ``groups`` = g, the inputs are each split into g groups and
    interleaved group by group (FactorizedReduce of g stacked edges)."""

    def __init__(self, groups=1):
        self.g = groups

    def forward(self, *zs):
        if self.g == 1:
            return torch.cat(zs, dim=1)
        B, _, H, W = zs[0].shape
        return torch.cat([z.view(B, self.g, -1, H, W) for z in zs], dim=2).view(B, -1, H, W)

    def abs_linear(self, *rs):
        return self.forward(*rs)

    def transpose(self, A, in_shapes):
        B, S, _, H, W = A.shape
        sizes = [s[0] // self.g for s in in_shapes]
        parts = A.view(B, S, self.g, -1, H, W).split(sizes, dim=3)
        return [p.reshape(B, S, self.g * c, H, W) for p, c in zip(parts, sizes)]


class _WeightedSum(_Affine):
    """Σ_i w_i z_i (w_i scalars, e.g. softmax(α)_o of a mixed edge; None means all ones)."""

    def __init__(self, weights=None):
        self.w = weights

    def forward(self, *zs):
        if self.w is None:
            return sum(zs[1:], zs[0])
        return sum((w * z for w, z in zip(self.w, zs)), torch.zeros_like(zs[0]))

    def abs_linear(self, *rs):
        if self.w is None:
            return self.forward(*rs)
        return sum((w.abs() * r for w, r in zip(self.w, rs)), torch.zeros_like(rs[0]))

    def transpose(self, A, in_shapes):
        return [A] * len(in_shapes) if self.w is None else [w * A for w in self.w]


class _EdgeSum(_Affine):
    """A supernet node: Σ_i (edge k_i of source i), each source's edges stacked edge-major (C each)."""

    def __init__(self, C, ks):
        self.C, self.ks = C, ks

    def forward(self, *ys):
        parts = [y[:, k * self.C : (k + 1) * self.C] for y, k in zip(ys, self.ks)]
        return sum(parts[1:], parts[0])

    def abs_linear(self, *rs):
        return self.forward(*rs)

    def transpose(self, A, in_shapes):
        C = self.C
        return [F.pad(A, (0, 0, 0, 0, k * C, s[0] - (k + 1) * C)) for k, s in zip(self.ks, in_shapes)]


class _MixedEdges(_Affine):
    """The n mixed edges of one source (SourceEdges): for edge e,
    y_e = Σ_{o∈conv} w_{e,o}·conv_{o,e} + w_{e,max}·mp + w_{e,avg}·ap + w_{e,skip}·skip_e,
    inputs (conv outputs (B, 4nC) op-major then edge-major, mp (B, C), ap (B, C), skip (B, C) or
    (B, nC)); output (B, nC) edge-major. The weights are softmax(α) ≥ 0, so |L| = L."""

    def __init__(self, w, n, C, stride):
        self.n, self.C, self.stride = n, C, stride
        self.wc = w[:, 4:].t().reshape(4, n, 1, 1, 1)
        self.wm, self.wa, self.ws = (w[:, i].reshape(n, 1, 1, 1) for i in (MAX, AVG, SKIP))

    def forward(self, conv, mp, ap, skip):
        B, _, H, W = conv.shape
        y = (conv.view(B, 4, self.n, self.C, H, W) * self.wc).sum(1)
        y = y + self.wm * mp.unsqueeze(1) + self.wa * ap.unsqueeze(1)
        y = y + self.ws * (skip.unsqueeze(1) if self.stride == 1 else skip.view(B, self.n, self.C, H, W))
        return y.reshape(B, self.n * self.C, H, W)

    def abs_linear(self, *rs):
        return self.forward(*rs)

    def transpose(self, A, in_shapes):
        B, S, _, H, W = A.shape
        A = A.view(B, S, 1, self.n, self.C, H, W)
        conv = (A * self.wc).reshape(B, S, 4 * self.n * self.C, H, W)
        A = A.squeeze(2)
        mp, ap = (A * self.wm).sum(2), (A * self.wa).sum(2)
        skip = A * self.ws
        skip = skip.sum(2) if self.stride == 1 else skip.reshape(B, S, self.n * self.C, H, W)
        return [conv, mp, ap, skip]


class _Const(_Affine):
    """A constant (the ``none`` op: zeros)."""

    def __init__(self, value):
        self.value = value

    def forward(self):
        return self.value

    def abs_linear(self):
        return torch.zeros_like(self.value)

    def transpose(self, A, in_shapes):
        return []

    def bias_term(self, A):
        return (A * self.value.unsqueeze(1)).flatten(2).sum(-1)


class _ChannelShuffle(_Affine):
    """PC-DARTS' channel shuffle with g groups: input channel k·(C/g) + a is output channel a·g + k."""

    def __init__(self, groups):
        self.g = groups

    def forward(self, z):
        B, C, H, W = z.shape
        return z.view(B, self.g, C // self.g, H, W).transpose(1, 2).reshape(B, C, H, W)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        B, S, C, H, W = A.shape
        return [A.view(B, S, C // self.g, self.g, H, W).transpose(2, 3).reshape(B, S, C, H, W)]


class _ReLU:
    def forward(self, z):
        return F.relu(z)


class _MaxPool:
    def __init__(self, kernel, stride, padding):
        self.k, self.s, self.p = _pair(kernel), _pair(stride), _pair(padding)

    def forward(self, z):
        return F.max_pool2d(z, self.k, self.s, self.p)


# --------------------------------------------------------------------------- the traced graph
class BoundGraph:
    """The network as primitive nodes; node 0 is the input. ``values[i]`` are the clean activations."""

    def __init__(self, x: torch.Tensor):
        self.ops: list = [None]
        self.inputs: list[tuple[int, ...]] = [()]
        self.values: list[torch.Tensor] = [x]
        self._shared: dict[tuple, int] = {}
        self.blocks: list[tuple[str, int, int]] = []  # (label, first node, output node) of stem and cells

    def add(self, op, *inputs: int) -> int:
        self.values.append(op.forward(*[self.values[i] for i in inputs]))
        self.ops.append(op)
        self.inputs.append(inputs)
        return len(self.ops) - 1

    def relu(self, z: int) -> int:
        """ReLU of node z (one node per input: a shared ReLU is relaxed once)."""
        if ("relu", z) not in self._shared:
            self._shared["relu", z] = self.add(_ReLU(), z)
        return self._shared["relu", z]

    def maxpool(self, z: int, kernel, stride, padding) -> int:
        """Max pool of node z (one node per input and geometry, like ``relu``)."""
        key = ("maxpool", z, _pair(kernel), _pair(stride), _pair(padding))
        if key not in self._shared:
            self._shared[key] = self.add(_MaxPool(kernel, stride, padding), z)
        return self._shared[key]

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.values[i].shape[1:])

    def head(self, n: int) -> "BoundGraph":
        """The same network restricted to the first n samples: its clean activations, and in train
        mode still the BatchNorm statistics of the whole traced batch (held in the ops)."""
        if not 1 <= n <= self.values[0].shape[0]:
            raise ValueError(f"n must be in 1..{self.values[0].shape[0]} (the traced batch), got {n!r}")
        g = BoundGraph.__new__(BoundGraph)
        g.ops = [_Const(op.value[:n]) if isinstance(op, _Const) else op for op in self.ops]
        g.inputs, g.values, g._shared = self.inputs, [v[:n] for v in self.values], self._shared
        g.blocks = self.blocks
        return g

    @property
    def output(self) -> int:
        return len(self.ops) - 1


def _bn(g: BoundGraph, bn: nn.BatchNorm2d, z: int) -> int:
    """BatchNorm as y = scale·z + shift: running statistics in eval mode, the clean batch's
    statistics (biased variance, as PyTorch normalises in training) in train mode."""
    if bn.training or bn.running_mean is None:
        v = g.values[z]
        mean, var = v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return g.add(_ChannelAffine(scale, shift), z)


def _conv(g: BoundGraph, conv: nn.Conv2d, z: int) -> int:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"bounds support Conv2d with numeric zero padding, got {conv}")
    return g.add(_Conv(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups), z)


def _factorized_reduce(g: BoundGraph, fr: FactorizedReduce, z: int) -> int:
    H, W = g.shape(z)[-2:]
    if H % 2 or W % 2:
        raise ValueError(f"FactorizedReduce needs an even spatial size, got {(H, W)}")
    r = g.relu(z)
    a = _conv(g, fr.conv_1, r)
    b = _conv(g, fr.conv_2, g.add(_Crop(), r))
    return _bn(g, fr.bn, g.add(_Concat(), a, b))


SUPPORTED = (
    "Sequential, ReLU, Conv2d, BatchNorm2d, AvgPool2d, MaxPool2d, Identity, Zero, FactorizedReduce, "
    "ReLUConvBN, DilConv, SepConv, Normalize, AdaptiveAvgPool2d(1), Flatten, Linear, Network, SearchNetwork"
)


def trace(model: nn.Module, x: torch.Tensor) -> BoundGraph:
    """The BoundGraph of ``model`` on the clean batch x (B, C, H, W)."""
    g = BoundGraph(x)
    _trace(g, model, 0)
    return g


def _trace(g: BoundGraph, m: nn.Module, z: int) -> int:
    if isinstance(m, SearchNetwork):
        return _trace_search_network(g, m, z)
    if isinstance(m, Network):
        return _trace_network(g, m, z)
    if isinstance(m, nn.Sequential):
        for sub in m:
            z = _trace(g, sub, z)
        return z
    if isinstance(m, (ReLUConvBN, DilConv, SepConv)):
        return _trace(g, m.op, z)
    if isinstance(m, nn.ReLU):
        return g.relu(z)
    if isinstance(m, nn.Conv2d):
        return _conv(g, m, z)
    if isinstance(m, nn.BatchNorm2d):
        return _bn(g, m, z)
    if isinstance(m, Normalize):
        mean, std = (t.flatten().to(g.values[z].dtype) for t in (m.mean, m.std))
        return g.add(_ChannelAffine(1.0 / std, -mean / std), z)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or m.divisor_override is not None:
            raise ValueError(f"bounds support AvgPool2d without ceil_mode/divisor_override, got {m}")
        return g.add(_AvgPool(m.kernel_size, m.stride, m.padding, m.count_include_pad), z)
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.return_indices or m.dilation not in (1, (1, 1)):
            raise ValueError(f"bounds support MaxPool2d without ceil_mode/dilation/indices, got {m}")
        return g.maxpool(z, m.kernel_size, m.stride, m.padding)
    if isinstance(m, (Identity, nn.Identity)):
        return z
    if isinstance(m, Zero):
        v = g.values[z][:, :, :: m.stride, :: m.stride]
        return g.add(_Const(torch.zeros_like(v)))
    if isinstance(m, FactorizedReduce):
        return _factorized_reduce(g, m, z)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if _pair(m.output_size) != (1, 1):
            raise ValueError(f"bounds support AdaptiveAvgPool2d(1) only, got {m}")
        return g.add(_Reshape4(), g.add(_GlobalAvgPool(), z))
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"bounds support Flatten(1, -1) only, got {m}")
        return g.add(_Flatten(g.shape(z)), z) if len(g.shape(z)) > 1 else z
    if isinstance(m, nn.Linear):
        return g.add(_Linear(m.weight, m.bias), z)
    raise ValueError(f"bounds: no rule for module {type(m).__name__}; supported: {SUPPORTED}")


class _Reshape4(_Affine):
    """(B, C) → (B, C, 1, 1), as AdaptiveAvgPool2d(1) returns."""

    def forward(self, z):
        return z[..., None, None]

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A[..., 0, 0]]


class _Flatten(_Affine):
    def __init__(self, in_shape):
        self.in_shape = in_shape

    def forward(self, z):
        return z.flatten(1)

    def abs_linear(self, r):
        return self.forward(r)

    def transpose(self, A, in_shapes):
        return [A.reshape(A.shape[0], A.shape[1], *self.in_shape)]


def _head(g: BoundGraph, net: nn.Module, z: int) -> int:
    return g.add(_Linear(net.classifier.weight, net.classifier.bias), g.add(_GlobalAvgPool(), z))


def _block(g: BoundGraph, label: str, first: int, out: int) -> int:
    g.blocks.append((label, first, out))
    return out


def _trace_network(g: BoundGraph, net: Network, z: int) -> int:
    s0 = s1 = _block(g, "stem", len(g.ops), _trace(g, net.stem, _trace(g, net.normalize, z)))
    for k, cell in enumerate(net.cells):
        label = f"cell {k} ({'reduction' if cell.reduction else 'normal'})"
        s0, s1 = s1, _block(g, label, len(g.ops), _trace_cell(g, cell, s0, s1))
    return _head(g, net, s1)


def _trace_cell(g: BoundGraph, cell: Cell, s0: int, s1: int) -> int:
    states = [_trace(g, cell.preprocess0, s0), _trace(g, cell.preprocess1, s1)]
    for j in range(cell.steps):
        h = [_trace(g, cell.ops[k], states[cell.indices[k]]) for k in (2 * j, 2 * j + 1)]
        states.append(g.add(_WeightedSum(), *h))
    return g.add(_Concat(), *[states[i] for i in cell.concat])


def _trace_search_network(g: BoundGraph, net: SearchNetwork, z: int) -> int:
    w_normal, w_reduce = net.op_weights()
    b_normal, b_reduce = net.edge_weights()
    s0 = s1 = _block(g, "stem", len(g.ops), _trace(g, net.stem, _trace(g, net.normalize, z)))
    for k, cell in enumerate(net.cells):
        w, b = (w_reduce, b_reduce) if cell.reduction else (w_normal, b_normal)
        first = len(g.ops)
        if isinstance(cell, SearchCell):
            out = _trace_search_cell(g, cell, s0, s1, w, b)
        elif isinstance(cell, ReferenceCell) and net.partial_channels > 1:
            raise ValueError("bounds trace the per-op reference supernet without partial channels only; "
                             "bound the fused SearchNetwork with partial_channels instead")
        elif isinstance(cell, ReferenceCell):
            out = _trace_reference_cell(g, cell, s0, s1, w)
        else:
            raise ValueError(f"bounds: no rule for search cell {type(cell).__name__}")
        s0, s1 = s1, _block(g, f"cell {k} ({'reduction' if cell.reduction else 'normal'})", first, out)
    return _head(g, net, s1)


def _edge_offsets(steps: int) -> list[int]:
    """Row of α of edge (input 0 → node j), DARTS order: node-major, then input."""
    return [sum(2 + k for k in range(j)) for j in range(steps)]


def _trace_search_cell(g: BoundGraph, cell: SearchCell, s0: int, s1: int, w: torch.Tensor,
                       beta: torch.Tensor | None = None) -> int:
    """With partial channels K (β given): node j = shuffle([Σ_i β_ij·mixed_ij(first C/K channels of
    x_i), Σ_i β_ij·bypass_i]), bypass_i the other channels of x_i (2×2 max-pooled at stride 2);
    β_ij scales the op weights of the mixed edge (both ≥ 0)."""
    states = [_trace(g, cell.preprocess0, s0), _trace(g, cell.preprocess1, s1)]
    offsets, steps = _edge_offsets(cell.steps), cell.steps
    K, C = cell.partial_channels, cell.C
    incoming: list[list[tuple[int, int]]] = [[] for _ in range(steps)]
    bypass: list[list[tuple[torch.Tensor, int]]] = [[] for _ in range(steps)]
    for i, src in enumerate(cell.sources):
        targets = list(range(max(0, i - 1), steps))
        rows = [offsets[j] + i for j in targets]
        if K == 1:
            x, wi = states[i], w[rows]
        else:
            x, wi = g.add(_Slice(0, C // K), states[i]), w[rows] * beta[rows, None]
            rest = g.add(_Slice(C // K, C), states[i])
            if src.stride == 2:
                rest = g.maxpool(rest, 2, 2, 0)
            for j in targets:
                bypass[j].append((beta[offsets[j] + i], rest))
        y = _trace_source(g, src, x, wi[:, : len(FUSED)])
        for k, j in enumerate(targets):
            incoming[j].append((y, k))
        for j, extra in zip(targets, _trace_added_edges(g, cell, i, x, wi)):
            incoming[j].append((extra, 0))
        if i >= 1:  # node i−1 has all its inputs now (sources 0..i)
            ys, ks = zip(*incoming[i - 1])
            node = g.add(_EdgeSum(src.C, list(ks)), *ys)
            if K > 1:
                bs, rests = zip(*bypass[i - 1])
                rest = g.add(_WeightedSum(list(bs)), *rests)
                node = g.add(_ChannelShuffle(K), g.add(_Concat(), node, rest))
            states.append(node)
    return g.add(_Concat(), *states[-cell.multiplier :])


def _trace_added_edges(g: BoundGraph, cell: SearchCell, i: int, x: int, w: torch.Tensor) -> list[int]:
    """The registered ops that source i's SourceEdges does not fuse (SearchCell.added_edges): per edge
    k, Σ_o w[k, o]·o_k(x) over those ops, each op traced through its module; none without such ops."""
    if not cell.added_columns:
        return []
    return [g.add(_WeightedSum([w[k, col] for col in cell.added_columns]), *[_trace(g, op, x) for op in ops.values()])
            for k, ops in enumerate(cell.added[i])]


def _trace_source(g: BoundGraph, src: SourceEdges, x: int, w: torch.Tensor) -> int:
    """The n mixed edges leaving node x, from SourceEdges' parameters (layout in its docstring)."""
    n, C, s = src.n, src.C, src.stride
    nC = n * C
    r = g.relu(x)
    rr = g.add(_Repeat(n), r) if n > 1 else r
    dw = [
        g.add(_Conv(src.dw_sep3, None, s, 1, 1, nC), rr),
        g.add(_Conv(src.dw_sep5, None, s, 2, 1, nC), rr),
        g.add(_Conv(src.dw_dil3, None, s, 2, 2, nC), rr),
        g.add(_Conv(src.dw_dil5, None, s, 4, 2, nC), rr),
    ]
    p = _bn(g, src.bn1, g.add(_Conv(src.pw1, groups=4 * n), g.add(_Concat(), *dw)))
    q = g.relu(g.add(_Slice(0, 2 * nC), p))
    dw2 = [
        g.add(_Conv(src.dw2_sep3, None, 1, 1, 1, nC), g.add(_Slice(0, nC), q)),
        g.add(_Conv(src.dw2_sep5, None, 1, 2, 1, nC), g.add(_Slice(nC, 2 * nC), q)),
    ]
    q = _bn(g, src.bn2, g.add(_Conv(src.pw2, groups=2 * n), g.add(_Concat(), *dw2)))
    conv = g.add(_Concat(), q, g.add(_Slice(2 * nC, 4 * nC), p))
    pooled = _bn(g, src.bn_pool, g.add(_Concat(), g.maxpool(x, 3, s, 1), g.add(_AvgPool(3, s, 1, False), x)))
    mp, ap = g.add(_Slice(0, C), pooled), g.add(_Slice(C, 2 * C), pooled)
    if s == 1:
        skip = x
    else:
        H, W = g.shape(x)[-2:]
        if H % 2 or W % 2:
            raise ValueError(f"a reduction cell needs an even spatial size, got {(H, W)}")
        a = g.add(_Conv(src.fr1, stride=2), r)
        b = g.add(_Conv(src.fr2, stride=2), g.add(_Crop(), r))
        skip = _bn(g, src.bn_fr, g.add(_Concat(groups=n), a, b))
    return g.add(_MixedEdges(w, n, C, s), conv, mp, ap, skip)


def _trace_reference_cell(g: BoundGraph, cell: ReferenceCell, s0: int, s1: int, w: torch.Tensor) -> int:
    """The per-op supernet cell (rnas_lib.reference): each edge Σ_o w_o·o(h), ``none`` dropped."""
    states = [_trace(g, cell.preprocess0, s0), _trace(g, cell.preprocess1, s1)]
    offset = 0
    for _ in range(cell.steps):
        terms, weights = [], []
        for i, h in enumerate(states):
            for o, op in enumerate(cell.ops[offset + i].ops):
                if PRIMITIVES[o] != "none":
                    terms.append(_trace(g, op, h))
                    weights.append(w[offset + i, o])
        offset += len(states)
        states.append(g.add(_WeightedSum(weights), *terms))
    return g.add(_Concat(), *states[-cell.multiplier :])


# --------------------------------------------------------------------------- bound propagation
NONLINEAR = (_ReLU, _MaxPool)
#: memory that forward-mode linear bounds may take. They carry one row per input pixel through every
#: node: about FORWARD_COPIES live copies of the widest node (measured: 0.5 GB at 28×28 and C=8, whose
#: widest node holds 25,088 neurons). There they take 2–4 s per image, and at ε = 1e-6 they leave
#: CROWN 460 undecided neurons to refine where the intervals leave 12,600 (a probe: 5 s, not 71 s).
FORWARD_MEMORY = 4 * 2**30
FORWARD_COPIES = 8
#: the notebooks' threshold for their default certification method: up to this many pixels (8×8
#: digits) crown-forward takes well under a second per image on a CPU; above it (28×28 MNIST), tens
#: of seconds, so they certify with crown-ibp
FORWARD_MAX_INPUTS = 256


def forward_mode_images(g: BoundGraph, dtype: torch.dtype | None = None) -> int:
    """How many images of the traced network ``g`` forward-mode linear bounds can carry at once within
    FORWARD_MEMORY, in ``dtype`` (default the trace's; the float64 re-check carries half as many).
    0: not even one; crown then starts from the intervals and backward passes alone."""
    itemsize = torch.finfo(dtype or g.values[0].dtype).bits // 8
    per_image = g.values[0][0].numel() * max(v[0].numel() for v in g.values) * itemsize
    return int(FORWARD_MEMORY // (FORWARD_COPIES * per_image))


#: bytes that one chunk of intermediate CROWN rows may use per live coefficient tensor
ROW_BUDGET = 256 * 2**20


def _check_args(x, eps, norm, method, clip, relu_slope):
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; allowed: {', '.join(METHODS)}")
    if relu_slope not in RELU_SLOPES:
        raise ValueError(f"unknown relu_slope {relu_slope!r}; allowed: {', '.join(RELU_SLOPES)}")
    norm = check_norm(norm)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor of pixels, got {type(x).__name__} "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite pixels; bounds need finite images in pixel units")
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.dim() > 1 or (eps_t.dim() == 1 and eps_t.numel() != x.shape[0]):
        raise ValueError(f"eps must be a number or a ({x.shape[0]},) tensor (one per sample), got shape "
                         f"{tuple(eps_t.shape)}")
    if not bool(torch.isfinite(eps_t).all()) or bool((eps_t < 0).any()):
        raise ValueError(f"eps must be finite and ≥ 0 (a radius in pixel units), got {eps}")
    if clip is not None:
        if len(clip) != 2 or not clip[0] < clip[1]:
            raise ValueError(f"clip must be None or (low, high) with low < high, got {clip!r}")
        lo, hi = float(x.min()), float(x.max())
        if lo < clip[0] or hi > clip[1]:
            raise ValueError(f"x has pixels in [{lo:.4g}, {hi:.4g}], outside the clip box {tuple(clip)}: the ball would "
                             "not contain x. Pass images in pixel units [0, 1] (normalisation is the model's first "
                             "layer), or clip=None to bound the unclipped ball")
    return eps_t.expand(x.shape[0]).reshape(-1, 1, 1, 1), norm


class _Bounder:
    """Bounds on the nodes of a traced graph over one ball (per-sample ε).

    ``pre[z]``: the bounds on node z used to relax its nonlinear consumers (ReLU / max pool).
    ``interval(i)``: node i's interval, propagated lazily from the input box through the affine
    nodes and through every nonlinear node *from its refined ``pre`` bounds* (so refining one layer
    tightens the cheap bounds of all later ones). For an ℓ2 ball, nodes that are one convolution of
    the input (up to per-channel affine maps on either side, e.g. Normalize → stem conv → BN) get
    the exact ℓ2 interval  f(x) ± ε‖row‖₂, intersected with the box interval.
    """

    def __init__(self, g: BoundGraph, eps, norm, clip, relu_slope):
        self.g, self.eps, self.norm, self.relu_slope = g, eps, norm, relu_slope
        x = g.values[0]
        self.x, self.clip = x, clip
        lo, hi = x - eps, x + eps
        if clip is not None:
            lo, hi = lo.clamp(min=clip[0]), hi.clamp(max=clip[1])
        self.box = (lo, hi)
        self.pre: dict[int, tuple] = {}
        self._relax: dict[int, tuple] = {}
        self._iv: list[tuple] = [self.box]
        self._rows2 = {0: torch.ones_like(x[:1])} if norm == 2 else {}  # squared ℓ2 row norms
        self._diagonal = {0}  # nodes whose rows are per-pixel scalings of the input
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(g.ops):
            if isinstance(op, NONLINEAR):
                self.consumers.setdefault(g.inputs[i][0], []).append(i)

    # -- intervals
    def interval(self, i: int) -> tuple:
        g = self.g
        while len(self._iv) <= i:
            j = len(self._iv)
            op, ins = g.ops[j], g.inputs[j]
            if isinstance(op, NONLINEAR):
                l, u = self.pre[ins[0]] if ins[0] in self.pre else self._iv[ins[0]]
                self._iv.append((op.forward(l), op.forward(u)))
                continue
            mids = [(self._iv[k][0] + self._iv[k][1]) / 2 for k in ins]
            rads = [(self._iv[k][1] - self._iv[k][0]) / 2 for k in ins]
            m, r = op.forward(*mids), op.abs_linear(*rads)
            l, u = m - r, m + r
            if self.norm == 2:
                l, u = self._l2_interval(j, op, ins, l, u)
            self._iv.append((l, u))
        return self._iv[i]

    def _l2_interval(self, j, op, ins, l, u):
        """Exact ℓ2 bounds f(x) ± ε‖row‖₂ where node j is (channel affine ∘) conv (∘ channel affine) of x."""
        z = ins[0] if len(ins) == 1 else None
        if isinstance(op, _ChannelAffine) and z in self._rows2:
            self._rows2[j] = self._rows2[z] * op.scale**2
            if z in self._diagonal:
                self._diagonal.add(j)
        elif isinstance(op, _Conv) and z in self._diagonal:
            self._rows2[j] = F.conv2d(self._rows2[z], op.w**2, None, op.stride, op.padding, op.dilation, op.groups)
        else:
            return l, u
        rad = self.eps * self._rows2[j].sqrt()
        v = self.g.values[j]
        return torch.maximum(l, v - rad), torch.minimum(u, v + rad)

    def use_ibp_intermediate(self):
        for z in sorted(self.consumers):
            self.pre[z] = self.interval(z)

    # -- CROWN intermediate bounds
    def crown_intermediate(self, refine: bool = True, forward: bool | None = None):
        """Bounds on the input z of every ReLU / max pool, in topological order, as the tightest of
        1. the interval from the layers bounded so far (``interval``);
        2. forward-mode linear bounds: every node carries a lower and an upper linear function of
           the input x' (Λ̲·x' + β̲ ≤ node ≤ Λ̄·x' + β̄), pushed through affine nodes as a centre and
           radius, L·(Λ̲+Λ̄)/2 ∓ |L|·(Λ̄−Λ̲)/2, and through ReLU / max pool by their relaxations; its
           cost grows with the input dimension n, not with the number of neurons, so it is used
           when ``forward`` is True or (None) when the batch fits in FORWARD_MEMORY
           (``forward_mode_images``);
        3. (``refine``) backward CROWN passes for the neurons whose relaxation is still undecided
           — unstable ReLU inputs (l < 0 < u) and the candidates of max-pool windows that no input
           is known to dominate (stable neurons are relaxed exactly whatever their bounds). The
           linear functions of a backward pass replace the forward ones where they bound tighter,
           so later layers inherit them.
        """
        g = self.g
        if not self.consumers:
            return
        last = max(self.consumers)
        last_use = {k: i for i in range(1, last + 1) for k in g.inputs[i]}
        if forward is None:
            forward = len(self.x) <= forward_mode_images(g)
        lin = {0: self._input_linear()} if forward else {}
        for j in range(1, last + 1):
            if forward:
                lin[j] = self._linear_step(j, lin)
                for k in set(g.inputs[j]):
                    if last_use.get(k) == j:
                        del lin[k]
            if j in self.consumers:
                l, u = self.interval(j)
                if forward:
                    lf, uf = self._concretize_linear(lin[j])
                    l, u = torch.maximum(l, lf), torch.minimum(u, uf)
                need = self._undecided(j, l, u)
                if refine and bool(need.any()):
                    cl, cu, back = self.crown_bounds(j, need, linear=forward)
                    if forward:
                        lin[j] = _tighter_linear(lin[j], back, need & (cl > l), need & (cu < u))
                    l, u = torch.where(need, torch.maximum(l, cl), l), torch.where(need, torch.minimum(u, cu), u)
                self.pre[j] = (l, u)
            if forward and last_use.get(j) is None:
                del lin[j]

    def _undecided(self, z, l, u) -> torch.Tensor:
        """The neurons of node z whose relaxation [l, u] leaves open and a tighter bound could close.
        No bound is tighter than the clean value v, so a ReLU input with v = 0 or a max-pool window
        whose maximum is tied at x (MNIST's constant background) stays open whatever is spent on
        it, and is not refined."""
        need = torch.zeros_like(l, dtype=torch.bool)
        v = self.g.values[z].detach()
        for i in self.consumers[z]:
            op = self.g.ops[i]
            if isinstance(op, _ReLU):
                need |= (l < 0) & (u > 0) & (v != 0)
            else:
                need |= _maxpool_undecided(op, l, u, v)
        return need

    def crown_bounds(self, z: int, need: torch.Tensor, linear: bool = False) -> tuple:
        """(l, u, linear): CROWN bounds on node z where ``need`` (B, *shape) is set (∓inf
        elsewhere), and (with ``linear``, else None) their linear functions (Λ̲, β̲, Λ̄, β̄), Λ
        (B, N, n) and β (B, N), zero elsewhere. One backward pass per chunk of rows ±e_i, each
        image's rows padded to the largest count in the batch."""
        B, shape = need.shape[0], need.shape[1:]
        N, n = math.prod(shape), self.x[0].numel()
        flat = need.reshape(B, N)
        counts = flat.sum(1)
        S = int(counts.max())
        order = torch.argsort((~flat).to(torch.uint8), dim=1, stable=True)[:, :S]  # needed neurons first
        valid = torch.arange(S, device=need.device) < counts[:, None]
        widest = max(math.prod(self.g.shape(i)) for i in range(z + 1))
        chunk = max(1, ROW_BUDGET // (2 * B * widest * self.x.element_size()))
        dt, dev = self.x.dtype, self.x.device
        low, up = torch.full((B, N), -math.inf, dtype=dt, device=dev), torch.full((B, N), math.inf, dtype=dt, device=dev)
        if linear:
            lowL, upL = torch.zeros(B, N, n, dtype=dt, device=dev), torch.zeros(B, N, n, dtype=dt, device=dev)
            lowb, upb = torch.zeros(B, N, dtype=dt, device=dev), torch.zeros(B, N, dtype=dt, device=dev)
        for start in range(0, S, chunk):
            idx, ok = order[:, start : start + chunk], valid[:, start : start + chunk]
            s = idx.shape[1]
            rows = torch.zeros(B, s, N, dtype=dt, device=dev)
            rows.scatter_(2, idx.unsqueeze(2), ok.unsqueeze(2).to(dt))
            coef, offset = self.backward(z, torch.cat([rows, -rows], 1).view(B, 2 * s, *shape))
            lb = offset + self.concretize(coef)
            low = low.scatter(1, idx, torch.where(ok, lb[:, :s], -math.inf))
            up = up.scatter(1, idx, torch.where(ok, -lb[:, s:], math.inf))
            if linear:
                coef = coef.reshape(B, 2 * s, n) * torch.cat([ok, ok], 1).unsqueeze(2)
                rows_idx = idx.unsqueeze(2).expand(B, s, n)
                lowL, upL = lowL.scatter(1, rows_idx, coef[:, :s]), upL.scatter(1, rows_idx, -coef[:, s:])
                lowb, upb = lowb.scatter(1, idx, offset[:, :s]), upb.scatter(1, idx, -offset[:, s:])
        return low.view(B, *shape), up.view(B, *shape), (lowL, lowb, upL, upb) if linear else None

    def _input_linear(self):
        """(centre Λ, radius Λ, centre β, radius β) of node 0: x' = I·x'; Λ as (B·n, *shape), n = #pixels."""
        x = self.x
        B, n = x.shape[0], x[0].numel()
        eye = torch.eye(n, dtype=x.dtype, device=x.device).view(1, n, *x.shape[1:]).expand(B, -1, *x.shape[1:])
        eye = eye.reshape(B * n, *x.shape[1:])
        return eye, torch.zeros_like(eye), torch.zeros_like(x), torch.zeros_like(x)

    def _linear_step(self, j: int, lin: dict):
        g, op, ins = self.g, self.g.ops[j], self.g.inputs[j]
        B, n = self.x.shape[0], self.x[0].numel()
        if isinstance(op, _Const):
            v = op.value
            zero = v.new_zeros(B * n, *v.shape[1:])
            return zero, zero, v, torch.zeros_like(v)
        if isinstance(op, NONLINEAR):
            cL, rL, cb, rb = lin[ins[0]]
            lowL, upL, lowb, upb = cL - rL, cL + rL, cb - rb, cb + rb
            if isinstance(op, _ReLU):
                sl, su, bu = (t.squeeze(1) for t in self._relaxation(j))  # the relaxation the backward passes use
                rep = lambda t: t.repeat_interleave(n, 0)  # noqa: E731 (per image → per row)
                lowL, upL = lowL * rep(sl), upL * rep(su)
                lowb, upb = lowb * sl, upb * su + bu
            else:
                idx, c, _ = self._relaxation(j)  # max_i z_i ≥ z_idx and ≤ z_idx + c
                shape, rows = g.shape(j), idx.repeat_interleave(n, 0)
                lowL, upL = (_gather_windows(t, rows).view(-1, *shape) for t in (lowL, upL))
                lowb = _gather_windows(lowb, idx).view(-1, *shape)
                upb = (_gather_windows(upb, idx) + c.squeeze(1)).view(-1, *shape)
            return (lowL + upL) / 2, (upL - lowL) / 2, (lowb + upb) / 2, (upb - lowb) / 2
        parts = [lin[k] for k in ins]
        return (op.linear(*[p[0] for p in parts]), op.abs_linear(*[p[1] for p in parts]),
                op.forward(*[p[2] for p in parts]), op.abs_linear(*[p[3] for p in parts]))

    def _concretize_linear(self, lin) -> tuple:
        """(l, u) of a node from its forward-mode linear bounds, by concretising each neuron's
        lower and upper linear function over the ball."""
        cL, rL, cb, rb = lin
        B, n, shape = self.x.shape[0], self.x[0].numel(), cb.shape[1:]

        def per_neuron(L):  # (B·n, *shape) → (B, N, *input shape)
            return L.reshape(B, n, -1).transpose(1, 2).reshape(B, -1, *self.x.shape[1:])

        l = self.concretize(per_neuron(cL - rL)).view(B, *shape) + cb - rb
        u = -self.concretize(per_neuron(-(cL + rL))).view(B, *shape) + cb + rb
        return l, u

    # -- relaxations
    def _relaxation(self, i: int):
        if i not in self._relax:
            op, z = self.g.ops[i], self.g.inputs[i][0]
            l, u = self.pre[z]
            if isinstance(op, _ReLU):
                self._relax[i] = tuple(t.unsqueeze(1) for t in relu_relaxation(l, u, self.relu_slope))
            else:
                self._relax[i] = _maxpool_relaxation(op, l, u)
        return self._relax[i]

    # -- backward pass
    def backward(self, start: int, A: torch.Tensor, stop_at_nonlinear: bool = False):
        """Σ A·node_start ≥ Λ·x' + β over the ball: returns (Λ, β), Λ of shape (B, S, *input shape)
        (None when no path reaches the input) and β (B, S). With ``stop_at_nonlinear`` the pass
        stops at every ReLU / max pool and concretises there on its (refined) interval (IBP)."""
        g = self.g
        acc = {start: A}
        offset = A.new_zeros(A.shape[:2])
        coef = None
        for i in range(start, -1, -1):
            A = acc.pop(i, None)
            if A is None:
                continue
            A = A.contiguous()
            op = g.ops[i]
            if i == 0:
                coef = A
                continue
            if isinstance(op, NONLINEAR):
                if stop_at_nonlinear:
                    offset = offset + _box_lower(A, *self.interval(i))
                    continue
                relax = self._relaxation(i)
                A_in, b = (_relu_backward if isinstance(op, _ReLU) else _maxpool_backward)(A, relax)
                offset = offset + b
                As = [A_in]
            else:
                b = op.bias_term(A)
                if b is not None:
                    offset = offset + b
                As = op.transpose(A, [g.shape(j) for j in g.inputs[i]])
            for j, a in zip(g.inputs[i], As):
                acc[j] = a if j not in acc else acc[j] + a
        return coef, offset

    def lower(self, start: int, A: torch.Tensor, stop_at_nonlinear: bool = False) -> torch.Tensor:
        """Lower bound (B, S) of Σ A·node_start over the ball, A of shape (B, S, *shape)."""
        coef, offset = self.backward(start, A, stop_at_nonlinear)
        return offset if coef is None else offset + self.concretize(coef)

    def concretize(self, A, eps=None) -> torch.Tensor:
        """min of Σ A·x' over the ball of radius ``eps`` (default: the bounder's ε) ∩ the clip box."""
        eps = self.eps if eps is None else eps.view(-1, 1, 1, 1)
        lo, hi = self.x - eps, self.x + eps
        if self.clip is not None:
            lo, hi = lo.clamp(min=self.clip[0]), hi.clamp(max=self.clip[1])
        box = _box_lower(A, lo, hi)
        if self.norm == "inf":
            return box
        lower = (A * self.x.unsqueeze(1)).flatten(2).sum(-1) - eps.view(-1, 1) * A.flatten(2).norm(dim=-1)
        return lower if self.clip is None else torch.maximum(lower, box)

    def certified_below(self, coef, offset, threshold: float = 0.0, iters: int = 40) -> torch.Tensor:
        """(B,) the largest ε' ≤ ε (per sample) with  min_s β_s + min_{‖x'−x‖≤ε'} Λ_s·x' > threshold,
        by bisection on the concretisation alone: relaxations built for the ε-ball stay sound on
        every smaller ball, so one backward pass certifies a whole range of radii."""
        eps = self.eps.view(-1)

        def ok(e):
            return (offset + self.concretize(coef, e)).amin(1) > threshold

        lo, hi = torch.zeros_like(eps), eps.clone()
        top = ok(hi)
        for _ in range(iters):
            mid = (lo + hi) / 2
            good = ok(mid)
            lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
        return torch.where(top, eps, lo)

    # -- α-CROWN: optimised lower ReLU slopes for the final specification
    def optimized_lower(self, start: int, A: torch.Tensor, steps: int = 20, lr: float = 0.1):
        """(lower (B, S), Λ, β) with the lower slope a_l ∈ [0, 1] of every unstable ReLU chosen per
        specification row by ``steps`` Adam steps on the bound (α-CROWN, Xu et al. 2021); every
        slope in [0, 1] gives a sound bound, and the best bound of each row over the steps is kept
        (with its Λ, β). No gradient flows to the model."""
        g = self.g
        B, S = A.shape[:2]
        A = A.detach()
        relus = [i for i, op in enumerate(g.ops[: start + 1]) if isinstance(op, _ReLU)]
        saved = {i: self._relaxation(i) for i in relus}
        slopes, unstable = {}, {}
        for i in relus:
            sl, su, bu = (t.detach() for t in saved[i])
            unstable[i] = (su > 0) & (su < 1)
            slopes[i] = sl.expand(B, S, *sl.shape[2:]).clone().requires_grad_(True)
        best = coef_best = off_best = None
        opt = torch.optim.Adam(list(slopes.values()), lr=lr, maximize=True) if relus else None
        try:
            for step in range(steps + 1):
                with torch.enable_grad():
                    for i in relus:
                        sl, su, bu = (t.detach() for t in saved[i])
                        self._relax[i] = (torch.where(unstable[i], slopes[i], sl), su, bu)
                    coef, offset = self.backward(start, A)
                    lb = offset if coef is None else offset + self.concretize(coef)
                    grads = torch.autograd.grad(lb.sum(), list(slopes.values())) if step < steps and relus else None
                if best is None:
                    best, off_best = lb.detach(), offset.detach()
                    coef_best = None if coef is None else coef.detach()
                else:
                    better = lb.detach() > best
                    best = torch.where(better, lb.detach(), best)
                    if coef is not None:
                        coef_best = torch.where(better.view(B, S, *[1] * (coef.dim() - 2)), coef.detach(), coef_best)
                    off_best = torch.where(better, offset.detach(), off_best)
                if grads is None:
                    break
                for p, gr in zip(slopes.values(), grads):
                    p.grad = gr
                opt.step()
                with torch.no_grad():
                    for p in slopes.values():
                        p.clamp_(0.0, 1.0)
        finally:
            self._relax.update(saved)
        return best, coef_best, off_best


def _tighter_linear(lin, back, use_low, use_up):
    """Forward-mode linear bounds (centre/radius form, Λ as (B·n, *shape)) with the rows of neurons
    ``use_low`` / ``use_up`` (B, *shape) replaced by the backward ones (Λ (B, N, n), β (B, N))."""
    cL, rL, cb, rb = lin
    lowL_b, lowb_b, upL_b, upb_b = back
    B, shape = cb.shape[0], cb.shape[1:]
    n = cL.shape[0] // B

    def as_rows(t):  # (B, N, n) → (B·n, *shape)
        return t.transpose(1, 2).reshape(B * n, *shape)

    ml, mu = use_low.repeat_interleave(n, 0), use_up.repeat_interleave(n, 0)
    lowL = torch.where(ml, as_rows(lowL_b), cL - rL)
    upL = torch.where(mu, as_rows(upL_b), cL + rL)
    lowb = torch.where(use_low, lowb_b.view(B, *shape), cb - rb)
    upb = torch.where(use_up, upb_b.view(B, *shape), cb + rb)
    return (lowL + upL) / 2, (upL - lowL) / 2, (lowb + upb) / 2, (upb - lowb) / 2


def _box_lower(A, l, u):
    """min of Σ A·z over l ≤ z ≤ u."""
    return (A.clamp(min=0) * l.unsqueeze(1) + A.clamp(max=0) * u.unsqueeze(1)).flatten(2).sum(-1)


def relu_relaxation(l: torch.Tensor, u: torch.Tensor, slope: str = "adaptive"):
    """Per neuron with input in [l, u]: (a_l, a_u, b_u) such that  a_l·z ≤ relu(z) ≤ a_u·z + b_u  on
    [l, u] (the triangle relaxation): (1, 1, 0) if l ≥ 0, (0, 0, 0) if u ≤ 0, else
    a_u = u/(u − l), b_u = −a_u·l and a_l = 1[u > −l] (``"adaptive"``, CROWN) or a_u (``"fast-lin"``)."""
    if slope not in RELU_SLOPES:
        raise ValueError(f"unknown relu_slope {slope!r}; allowed: {', '.join(RELU_SLOPES)}")
    active, unstable = l >= 0, (l < 0) & (u > 0)
    width = torch.where(unstable, u - l, torch.ones_like(u))
    su = torch.where(unstable, u / width, active.to(u.dtype))
    bu = torch.where(unstable, -su * l, torch.zeros_like(u))
    if slope == "adaptive":
        sl = torch.where(unstable, (u > -l).to(u.dtype), active.to(u.dtype))
    else:
        sl = su
    return sl, su, bu


def _relu_backward(A, relax):
    """(Λ_z, Λ⁻·b_u) through ReLU: Λ_z = Λ⁺·a_l + Λ⁻·a_u per neuron. Stable neurons have a_l = a_u
    and b_u = 0, so for one image with few unstable neurons (full CROWN's rows) Λ_z = Λ·a_u on the
    whole tensor and the sign only matters on the unstable columns: one pass over Λ instead of five.
    (Batches keep the dense rule, whose rounding does not depend on the other images.)"""
    sl, su, bu = relax
    B, S = A.shape[:2]
    a = A.reshape(B, S, -1)
    sl_f, su_f, bu_f = (t.reshape(t.shape[0], t.shape[1], -1) for t in (sl, su, bu))
    idx = ((sl_f != su_f) | (bu_f != 0)).flatten(0, 1).any(0).nonzero().squeeze(1) if B == 1 else None
    if idx is None or 4 * len(idx) > a.shape[2]:
        return A * torch.where(A >= 0, sl, su), (A.clamp(max=0) * bu).flatten(2).sum(-1)
    ai = a[..., idx]
    sli, sui, bui = (t[..., idx] for t in (sl_f, su_f, bu_f))
    out = (a * su_f).index_copy_(2, idx, ai * torch.where(ai >= 0, sli, sui))  # a fresh tensor
    return out.view_as(A), (ai.clamp(max=0) * bui).sum(-1)


def _windows(op: _MaxPool, t: torch.Tensor) -> torch.Tensor:
    """(B, C, k·k, L): the max-pool windows of t, padding as −inf."""
    B, C = t.shape[:2]
    (kh, kw), (sh, sw), (ph, pw) = op.k, op.s, op.p
    return F.unfold(F.pad(t, (pw, pw, ph, ph), value=-math.inf), (kh, kw), stride=(sh, sw)).view(B, C, kh * kw, -1)


def _maxpool_relaxation(op: _MaxPool, l, u):
    """For each window: flat input index of j = argmax l (B, C, L) and the offset c ≥ 0 (B, 1, C, L)."""
    B, C, H, W = l.shape
    (kh, kw), (sh, sw), (ph, pw) = op.k, op.s, op.p
    lw, uw = _windows(op, l), _windows(op, u)
    j = lw.argmax(2, keepdim=True)
    u_others = uw.scatter(2, j, -math.inf).amax(2)
    c = (u_others - lw.gather(2, j).squeeze(2)).clamp(min=0)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    j = j.squeeze(2)
    rows = (torch.arange(Ho, device=l.device) * sh - ph).repeat_interleave(Wo) + j // kw
    cols = (torch.arange(Wo, device=l.device) * sw - pw).repeat(Ho) + j % kw
    return rows * W + cols, c.unsqueeze(1), (H, W)


def _maxpool_undecided(op: _MaxPool, l, u, v) -> torch.Tensor:
    """In each window whose maximum no input is known to attain (max_{i≠j} u_i > l_j, j = argmax l)
    but one input attains alone at the clean point v (so tighter bounds could decide it), the
    inputs that decide its relaxation: j and every i with u_i > l_j."""
    B, C, H, W = l.shape
    lw, uw = _windows(op, l), _windows(op, u)
    if lw.shape[2] < 2:  # 1×1 windows: the identity, nothing to decide
        return torch.zeros_like(l, dtype=torch.bool)
    j = lw.argmax(2, keepdim=True)
    lj = lw.gather(2, j)
    top2 = _windows(op, v).topk(2, dim=2).values
    open_ = (uw.scatter(2, j, -math.inf).amax(2, keepdim=True) > lj) & (top2[:, :, :1] > top2[:, :, 1:])  # (B, C, 1, L)
    candidate = open_ & ((uw > lj) | (torch.arange(lw.shape[2], device=l.device).view(1, 1, -1, 1) == j))
    cover = F.fold(candidate.to(l.dtype).reshape(B, -1, lw.shape[3]), (H, W), op.k, padding=op.p, stride=op.s)
    return cover > 0


def _gather_windows(t, idx):
    """(B, C, L): t (B, C, H, W) at the flat index idx (B, C, L) of each of the L windows."""
    return t.flatten(2).gather(2, idx).view(*t.shape[:2], -1)


def _maxpool_backward(A, relax):
    idx, c, (H, W) = relax
    B, S, C = A.shape[:3]
    a = A.reshape(B, S, C, -1)
    A_in = a.new_zeros(B, S, C, H * W).scatter_add(3, idx.unsqueeze(1).expand(B, S, C, idx.shape[-1]), a)
    return A_in.view(B, S, C, H, W), (a.clamp(max=0) * c).flatten(2).sum(-1)


def _bounder(model, x, eps, norm, method, clip, relu_slope, graph=None) -> tuple[_Bounder, str]:
    eps_t, norm = _check_args(x, eps, norm, method, clip, relu_slope)
    if graph is None:
        graph = trace(model, x)
    elif graph.values[0].shape != x.shape or not torch.equal(graph.values[0], x):
        raise ValueError("graph must be a trace of the model on x (use trace(model, x_batch).head(len(x)) "
                         f"when x is the head of a larger batch); it holds inputs of shape {tuple(graph.values[0].shape)}")
    bd = _Bounder(graph, eps_t, norm, clip, relu_slope)
    if method == "crown-forward":
        bd.crown_intermediate(refine=False, forward=True)
    elif method in ("crown", "alpha-crown"):
        bd.crown_intermediate()
    else:
        bd.use_ibp_intermediate()
    return bd, norm


def _spec_certificate(bd: _Bounder, spec: torch.Tensor, method: str, alpha_steps: int):
    """(lower (B, S), Λ, β): the better of the IBP bound (on the refined intervals) and the linear
    bound of ``method`` per row — both are sound, so their maximum is; Λ, β of the linear bound."""
    out = bd.g.output
    ibp = bd.lower(out, spec, stop_at_nonlinear=True)
    if method == "ibp":
        return ibp, None, None
    if method == "alpha-crown":
        lb, coef, offset = bd.optimized_lower(out, spec, alpha_steps)
    else:
        coef, offset = bd.backward(out, spec)
        lb = offset if coef is None else offset + bd.concretize(coef)
    return torch.maximum(lb, ibp), coef, offset


def spec_bounds(model: nn.Module, x: torch.Tensor, spec: torch.Tensor, eps, norm="inf", method="crown-ibp",
                clip=(0.0, 1.0), relu_slope="adaptive", graph: BoundGraph | None = None,
                alpha_steps: int = 20) -> torch.Tensor:
    """Lower bounds (B, S) of spec[b, s]·f(x') over the ball, spec of shape (B, S, num_classes).
    ``graph``: an existing trace of ``model`` on x, to reuse its forward pass (see BoundGraph.head).
    ``alpha_steps``: optimisation steps of the ReLU slopes for ``method="alpha-crown"``."""
    bd, _ = _bounder(model, x, eps, norm, method, clip, relu_slope, graph)
    K = bd.g.shape(bd.g.output)
    if spec.dim() != 3 or spec.shape[0] != x.shape[0] or tuple(spec.shape[2:]) != K:
        raise ValueError(f"spec must have shape ({x.shape[0]}, S, {K[0]}), got {tuple(spec.shape)}")
    return _spec_certificate(bd, spec.to(x.dtype), method, alpha_steps)[0]


def output_bounds(model: nn.Module, x: torch.Tensor, eps, norm="inf", method="crown-ibp", clip=(0.0, 1.0),
                  relu_slope="adaptive") -> tuple[torch.Tensor, torch.Tensor]:
    """(lb, ub), each (B, num_classes): lb ≤ f(x') ≤ ub for every x' with ‖x' − x‖_norm ≤ eps
    (and x' in the ``clip`` box unless clip is None). eps: a number or one per sample (B,).
    relu_slope: "adaptive" (CROWN) or "fast-lin" lower ReLU slopes."""
    K = _num_classes(model)
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    spec = torch.cat([eye, -eye]).expand(x.shape[0], 2 * K, K)
    lb = spec_bounds(model, x, spec, eps, norm, method, clip, relu_slope)
    return lb[:, :K], -lb[:, K:]


def margin_spec(y: torch.Tensor, num_classes: int, targets: torch.Tensor | None = None, dtype=torch.float32):
    """Rows e_y − e_t: all t ≠ y (B, K−1, K), or one given target per sample (B, 1, K)."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    if targets is None:
        others = torch.arange(num_classes, device=y.device).expand(len(y), -1)
        others = others[others != y.unsqueeze(1)].view(len(y), num_classes - 1)
        return eye[y].unsqueeze(1) - eye[others]
    if targets.shape != y.shape:
        raise ValueError(f"targets must have one class per sample, shape {tuple(y.shape)}, got {tuple(targets.shape)}")
    if bool((targets == y).any()):
        raise ValueError("a target class equals the true label y; targets must differ from y")
    return (eye[y] - eye[targets]).unsqueeze(1)


def check_labels(y, n: int, num_classes: int, device=None) -> torch.Tensor:
    """y as a tensor of n class labels in 0..num_classes − 1, else one ValueError that says so."""
    y = torch.as_tensor(y, device=device)
    if y.shape != (n,) or bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"y must hold one label per sample, {n} labels in 0..{num_classes - 1}; got {y.tolist()}")
    return y


def _margin_rows(model, x, y, targets):
    K = _num_classes(model)
    y = check_labels(y, x.shape[0], K, x.device)
    if targets is not None:
        targets = torch.as_tensor(targets, device=x.device)
        if bool(((targets < 0) | (targets >= K)).any()):
            raise ValueError(f"targets must be labels in 0..{K - 1}, got {targets.tolist()}")
    return margin_spec(y, K, targets, x.dtype)


def margin_lower_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown-ibp",
                       targets: torch.Tensor | None = None, clip=(0.0, 1.0), relu_slope="adaptive",
                       graph: BoundGraph | None = None, alpha_steps: int = 20) -> torch.Tensor:
    """(B,) lower bound of min_{t≠y} f_y(x') − f_t(x') over the ball (of f_y − f_{targets} if given),
    computed on the margin itself (specification rows e_y − e_t propagated backward).
    ``graph``: an existing trace of ``model`` on x, to reuse its forward pass (see BoundGraph.head)."""
    spec = _margin_rows(model, x, y, targets)
    return spec_bounds(model, x, spec, eps, norm, method, clip, relu_slope, graph, alpha_steps).amin(1)


def margin_certificate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown",
                       targets: torch.Tensor | None = None, clip=(0.0, 1.0), relu_slope="adaptive",
                       alpha_steps: int = 20, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, r), each (B,): m the margin lower bound over the ε-ball (as ``margin_lower_bound``) and
    r ≤ ε a radius that the same bound certifies: ε where m > threshold, else the largest ε' whose
    concretisation of the linear bound (Λ, β) built at ε is still > threshold (0 for ``ibp``,
    whose bound is not linear in the input). Relaxations sound on the ε-ball are sound on every
    smaller ball, so r is a certificate without another backward pass."""
    spec = _margin_rows(model, x, y, targets)
    bd, _ = _bounder(model, x, eps, norm, method, clip, relu_slope)
    lb, coef, offset = _spec_certificate(bd, spec, method, alpha_steps)
    m = lb.amin(1)
    eps_b = bd.eps.view(-1)
    if coef is None:
        r = torch.where(m > threshold, eps_b, torch.zeros_like(eps_b))
    else:
        r = torch.where(m > threshold, eps_b, bd.certified_below(coef, offset, threshold))
    return m, r


def implicit_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", method="crown-ibp",
                    eps_max: float = 1.0, iters: int = 14, clip=(0.0, 1.0)) -> torch.Tensor:
    """(B,) the radius ε*(x) at which the margin lower bound m(x, ε) crosses 0 (CNN-Cert's
    certified lower bound), differentiable in the model by the implicit function theorem:
        ρ = ε₀ + m(x, ε₀) / (−∂_ε m(x, ε₀)),   ∇ρ = −∇m / ∂_ε m   at m(x, ε*) = 0,
    ε₀ found by ``iters`` steps of geometric bisection on [eps_max·1e-6, eps_max] without gradient
    (ρ is then the Newton step from ε₀, so ρ ≈ ε* to second order). Where the bound does not certify
    eps_max·1e-6, the bracket is [ε_min, eps_max·1e-6] with ε_min = max(eps_max·1e-15, 8·(the dtype's
    machine epsilon)): below a few ulps of a pixel the ball is lost in rounding, so float32 reaches
    radii down to ~1e-6 and float64 down to ~1e-15. Where even ε_min is not certified
    (a negative clean margin: misclassified), ε₀ = 0 and ρ < 0 is the signed distance of the
    linearised bound: misclassified images push the same way as certified ones. ∂_ε m is held
    constant in the gradient."""
    norm = check_norm(norm)
    with torch.no_grad():
        lo = torch.full((len(x),), eps_max * 1e-6, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, float(eps_max))
        top = margin_lower_bound(model, x, y, hi, norm, method, clip=clip) > 0
        bottom = margin_lower_bound(model, x, y, lo, norm, method, clip=clip) > 0
        eps_min = max(eps_max * 1e-15, 8 * torch.finfo(x.dtype).eps)
        if not bottom.all() and eps_min < eps_max * 1e-6:  # radii below the first floor
            low = margin_lower_bound(model, x, y, torch.full_like(lo, eps_min), norm, method, clip=clip) > 0
            below = low & ~bottom
            lo, hi = torch.where(below, eps_min, lo), torch.where(below, lo, hi)
            bottom = bottom | below
        for _ in range(iters):
            mid = (lo * hi).sqrt()
            ok = margin_lower_bound(model, x, y, mid, norm, method, clip=clip) > 0
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        eps0 = torch.where(top, hi, torch.where(bottom, (lo * hi).sqrt(), torch.zeros_like(lo)))
    eps0 = eps0.requires_grad_(True)
    with torch.enable_grad():
        m = margin_lower_bound(model, x, y, eps0, norm, method, clip=clip)
        (slope,) = torch.autograd.grad(m.sum(), eps0, retain_graph=torch.is_grad_enabled())
    slope = slope.detach().clamp(max=-1e-12)  # ∂_ε m < 0: a wider ball never raises a lower bound
    return eps0.detach() + m / -slope


def block_widths(model: nn.Module, x: torch.Tensor, eps, norm="inf", method="crown", clip=(0.0, 1.0),
                 relu_slope="adaptive") -> list[dict]:
    """Where a bound loosens: for the stem, every cell and the logits, the mean width u − l of the
    bounds on its output over the ball (the ``pre`` bounds that relax the next cell where there
    are, else the node's interval from the refined layers), and its growth over the previous
    block's width. Records: block, mean_width, growth (None for the stem)."""
    with torch.no_grad():
        bd, _ = _bounder(model, x, eps, norm, method, clip, relu_slope)
    g = bd.g
    rows = []
    nodes = [(label, out) for label, _, out in g.blocks] + [("logits", g.output)]
    for label, node in nodes:
        with torch.no_grad():
            l, u = bd.pre[node] if node in bd.pre else bd.interval(node)
        width = float((u - l).mean())
        growth = width / rows[-1]["mean_width"] if rows and rows[-1]["mean_width"] > 0 else None
        rows.append({"block": label, "mean_width": width, "growth": growth})
    return rows


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the number of classes of {type(model).__name__}: no Linear head")
    return linears[-1].out_features
