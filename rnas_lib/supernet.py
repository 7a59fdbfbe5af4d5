"""The DARTS supernet: every edge of a cell is a mixed op Σ_o softmax(α)_o · o(x).

rnas computes the mixed edges *by source node*: all edges leaving one node share the ReLU, the
parameter-free pools (and the BatchNorm without affine after them) and the identity, and their
convolutions run as one grouped convolution over the stacked edges. The maths is exactly DARTS'
(``rnas_lib.reference`` keeps the straightforward per-op form; tests compare the two to 1e-5);
only the number of kernel launches changes, and, on the CPU, the memory layout: there the cells
compute on channels-last tensors (pixel-major, channels innermost), where PyTorch's depthwise
convolutions and pools are 2–5× faster and every pointwise convolution is a plain matrix product.

For a source x feeding n edges with op weights w ∈ R^{n×8} (rows sum to 1), edge e gives
    y_e = w_e,max·BN(maxpool x) + w_e,avg·BN(avgpool x) + w_e,skip·skip_e(x) + Σ_{o∈conv} w_e,o·o_e(x)
(the ``none`` op contributes 0·x). Primitives added to the registry (``rnas_lib.ops.register_primitive``)
are not fused: each edge holds one module per added op o (built with the cell), and
y_e += Σ_{o added} w_e,o·o_e(x), w = softmax(α) over all registered ops (with partial channels, o_e
runs on the edge's C/K channels with the β-scaled weight, as the fused ops do). Node j of the cell is
Σ_{i<j} y_{i→j}; the cell outputs the concatenation of its last ``multiplier`` nodes. Reduction
cells (at 1/3 and 2/3 of the depth) stride their edges from the two cell inputs by 2. BatchNorm
inside search cells has no affine parameters (DARTS); in training mode it uses the batch statistics
(computed by ``rnas_lib.batchnorm``).

Partial channels (PC-DARTS, Xu et al. 2020), ``partial_channels`` = K > 1: an edge from a node x
with C channels sends only its first C/K channels x_a through the mixed op and lets the other
channels x_b bypass it (2×2 max-pooled on the stride-2 edges of reduction cells), then shuffles
the channels (``channel_shuffle``, groups K); every edge output is weighted by the edge
normalisation β, softmax over the incoming edges of each node (per cell type):
    node_j = Σ_i β_{ij} · shuffle([mixed_{ij}(x_{i,a}), bypass(x_{i,b})])
           = shuffle([Σ_i β_{ij}·mixed_{ij}(x_{i,a}), Σ_i β_{ij}·bypass(x_{i,b})])
(the shuffle is a fixed permutation, so it is applied once per node; β_{ij} scales the op weights
of the mixed op). All edges from one node sample the same channels, so one SourceEdges on C/K
channels computes them. K = 1 is plain DARTS (no β).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm import BatchNorm2d, batch_norm
from .genotypes import Genotype, derive_genotype, edge_normalization, num_edges
from .ops import DARTS_PRIMITIVES, PRIMITIVES, FactorizedReduce, Normalize, ReLUConvBN, registered_primitives

#: the order in which SourceEdges stacks its convolutional ops (the last four DARTS primitives)
CONV_ORDER = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
#: the op weights SourceEdges takes: the columns of the eight DARTS ops, which lead the registry
FUSED = tuple(p.name for p in DARTS_PRIMITIVES)
assert FUSED[4:] == CONV_ORDER and tuple(PRIMITIVES[: len(FUSED)]) == FUSED
MAX, AVG, SKIP = FUSED.index("max_pool_3x3"), FUSED.index("avg_pool_3x3"), FUSED.index("skip_connect")


def _conv_weight(out_channels: int, fan_in: int, kernel: int) -> nn.Parameter:
    """A conv weight with PyTorch's default init, U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(out_channels, fan_in // (kernel * kernel), kernel, kernel).uniform_(-bound, bound))


class SourceEdges(nn.Module):
    """The n mixed edges leaving one node, on C channels, with a common stride.

    Weights are stacked edge-major: channel e·C + c belongs to edge e; the conv ops are stacked in
    CONV_ORDER (op-major: channel (o·n + e)·C + c of pw1/bn1, (o·n + e)·C + c of pw2/bn2 for the
    two separable ops). Stage 1 of all four conv ops is depthwise (on ReLU x, one k×k kernel per
    edge and channel) → pointwise C→C per edge → BN; stage 2 of the two separable ops is ReLU →
    depthwise → pointwise → BN.

    Computation (same maths, laid out for speed): each depthwise stage-1 conv reads the C channels
    of ReLU x once and writes n outputs per channel (groups = C, channel c·n + e); every pointwise
    conv is one matrix product at every pixel with a block-diagonal (n·C × n·C) matrix built from
    pw1/pw2 (which also puts the channels back in edge-major order); the op weights w_{e,o} enter
    as the affine scale of the last BatchNorm of op o, so w·BN(z) costs no extra pass; the features
    all edges share (the two pooled maps, and the identity at stride 1) enter every edge through
    one more matrix product, with w_{:,k} ⊗ I_C. The output is (B, n·C, H', W') in x's layout
    (channels-last on the CPU), returned as a (B, n, C, H', W') view.
    """

    def __init__(self, C: int, n: int, stride: int):
        super().__init__()
        for name, value in (("C", C), ("n", n)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.C, self.n, self.stride = C, n, stride
        nC = n * C
        self.dw_sep3 = _conv_weight(nC, 9, 3)
        self.dw_sep5 = _conv_weight(nC, 25, 5)
        self.dw_dil3 = _conv_weight(nC, 9, 3)
        self.dw_dil5 = _conv_weight(nC, 25, 5)
        self.pw1 = _conv_weight(4 * nC, C, 1)
        self.bn1 = BatchNorm2d(4 * nC, affine=False)
        self.dw2_sep3 = _conv_weight(nC, 9, 3)
        self.dw2_sep5 = _conv_weight(nC, 25, 5)
        self.pw2 = _conv_weight(2 * nC, C, 1)
        self.bn2 = BatchNorm2d(2 * nC, affine=False)
        self.bn_pool = BatchNorm2d(2 * C, affine=False)  # channels 0..C−1 after max pool, C..2C−1 after avg pool
        if stride == 2:
            if C % 2:
                raise ValueError(f"a reduction edge needs an even channel count, got C={C}")
            self.fr1 = _conv_weight(nC // 2, C, 1)
            self.fr2 = _conv_weight(nC // 2, C, 1)
            self.bn_fr = BatchNorm2d(nC, affine=False)

    # -- the four conv ops -------------------------------------------------------------------
    def _stage1(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pointwise(depthwise(ReLU x)) of the four conv ops, each (B, n·C, H', W') edge-major."""
        n, C, s = self.n, self.C, self.stride
        r = F.relu(x).contiguous(memory_format=torch.channels_last)
        # pw1 as four block-diagonal matrices M_o[(e·C + c'), (c·n + e)] = pw1[(o·n + e)·C + c', c]
        blocks = self.pw1.view(4, n, C, C).permute(0, 2, 3, 1)  # (o, c', c, e)
        M = torch.diag_embed(blocks).permute(0, 3, 1, 2, 4).reshape(4, n * C, C * n)
        out = []
        for o, (weight, k, dilation) in enumerate(
            ((self.dw_sep3, 3, 1), (self.dw_sep5, 5, 1), (self.dw_dil3, 3, 2), (self.dw_dil5, 5, 2))
        ):
            w_cn = weight.view(n, C, 1, k, k).transpose(0, 1).reshape(C * n, 1, k, k)
            d = _depthwise(r, w_cn, s, dilation * (k - 1) // 2, dilation)
            out.append(_pointwise(M[o], d))
        return out

    def _stage2(self, q: torch.Tensor, o: int) -> torch.Tensor:
        """Pointwise(depthwise(ReLU q)) of separable op o ∈ {0, 1}; q and result (B, n·C, H', W')."""
        n, C = self.n, self.C
        weight, k = (self.dw2_sep3, 3) if o == 0 else (self.dw2_sep5, 5)
        r = F.relu(q).contiguous(memory_format=torch.channels_last)
        d = _depthwise(r, weight, 1, (k - 1) // 2, 1)
        blocks = self.pw2.view(2, n, C, C)[o].permute(1, 2, 0)  # (c', c, e)
        M = torch.diag_embed(blocks).permute(2, 0, 3, 1).reshape(n * C, n * C)  # [(e·C + c'), (e·C + c)]
        return _pointwise(M, d)

    def _conv_terms(self, x: torch.Tensor, scale: torch.Tensor | None) -> list[torch.Tensor]:
        """The four conv ops, each (B, n·C, H', W'); op o multiplied by scale[o] (n·C,) if given."""
        nC = self.n * self.C
        z = self._stage1(x)
        g = [None] * 4 if scale is None else list(scale)
        sep = [_batch_norm(self.bn1, z[o], slice(o * nC, (o + 1) * nC), None, o == 0) for o in range(2)]
        dil = [_batch_norm(self.bn1, z[o], slice(o * nC, (o + 1) * nC), g[o], False) for o in (2, 3)]
        sep = [_batch_norm(self.bn2, self._stage2(sep[o], o), slice(o * nC, (o + 1) * nC), g[o], o == 0)
               for o in range(2)]
        return sep + dil

    def conv_ops(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, n, C, H', W'): sep3, sep5, dil3, dil5 of every edge."""
        y = torch.stack(self._conv_terms(x, None), dim=1)  # (B, 4, n·C, H', W')
        return y.unflatten(2, (self.n, self.C))

    # -- skip and pools ----------------------------------------------------------------------
    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, C, H, W) identity, or (B, n, C, H/2, W/2) FactorizedReduce per edge."""
        if self.stride == 1:
            return x.unsqueeze(1)
        return self._factorized_reduce(x, None).unflatten(1, (self.n, self.C))

    def _factorized_reduce(self, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        """(B, n·C, H/2, W/2): BN([fr1 ∗ ReLU x, fr2 ∗ ReLU x shifted]) per edge, times scale."""
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(
                f"a reduction cell needs an even spatial size, got {tuple(x.shape[-2:])}; "
                "use an input size divisible by 4 (two reductions)"
            )
        n, C = self.n, self.C
        r = F.relu(x)
        a = F.conv2d(r, self.fr1, stride=2)
        b = F.conv2d(r[:, :, 1:, 1:], self.fr2, stride=2)
        both = torch.cat([a.unflatten(1, (n, C // 2)), b.unflatten(1, (n, C // 2))], dim=2).flatten(1, 2)
        return _batch_norm(self.bn_fr, both, slice(None), scale, True)

    def pools(self, x: torch.Tensor) -> torch.Tensor:
        """BN([maxpool x, avgpool x]), (B, 2·C, H', W'); 3×3 windows, padding 1. One BatchNorm over
        the 2·C channels is the two BatchNorms of the ops (statistics are per channel)."""
        s = self.stride
        # CPU pooling kernels are ~5× faster on channels-last tensors. Not on CUDA: there, avg_pool2d's
        # backward from a channels-last input with a contiguous output gradient is wrong (torch 2.11,
        # gradient errors of order 1; benchmarks/bench_paper_tier.py --check compares with the CPU).
        cpu = x.device.type == "cpu"
        xc = x.contiguous(memory_format=torch.channels_last if cpu else torch.contiguous_format)
        pooled = torch.cat([F.max_pool2d(xc, 3, s, 1), F.avg_pool2d(xc, 3, s, 1, count_include_pad=False)], dim=1)
        return self.bn_pool(pooled)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, n, C, H', W'): the n mixed-edge outputs for op weights w of shape (n, 8) (a view of a
        (B, n·C, H', W') tensor: split it along the channels to keep its layout in the backward)."""
        n, C = self.n, self.C
        scale = w.t().repeat_interleave(C, dim=1)  # scale[o, e·C + c] = w[e, o]
        terms = self._conv_terms(x, scale[4:])
        out = (terms[0] + terms[1]) + (terms[2] + terms[3])
        if self.stride == 2:
            out = out + self._factorized_reduce(x, scale[SKIP])
        # the shared features mixed into every edge by one matrix at every pixel:
        # out[e·C + c] += Σ_k w[e, k]·shared[k·C + c], i.e. the matrix w[:, k] ⊗ I_C
        shared, ops = (torch.cat([self.pools(x), x], dim=1), [MAX, AVG, SKIP]) if self.stride == 1 \
            else (self.pools(x), [MAX, AVG])
        mix = torch.kron(w[:, ops], torch.eye(C, dtype=w.dtype, device=w.device))
        return (out + _pointwise(mix, shared)).unflatten(1, (n, C))


def _depthwise(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """conv2d(x, w, groups = C) for x (B, C, H, W), w (C·n, 1, k, k): n outputs per input channel,
    channel c·n + e; through _DepthwiseConv on the CPU at stride 1."""
    if stride == 1 and x.device.type == "cpu":
        return _DepthwiseConv.apply(x, w, padding, dilation)
    return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1])


class _DepthwiseConv(torch.autograd.Function):
    """y = conv2d(x, w, stride 1, groups = C) for x (B, C, H, W), w (C·n, 1, k, k), n ≥ 1.

    ∂L/∂x is a true depthwise convolution of the output gradient with the flipped kernels (the
    transpose of a stride-1 convolution, same padding), summed over the n outputs of each input
    channel; ∂L/∂w is PyTorch's. On the CPU, PyTorch's own input gradient for n > 1 is about 3× its
    forward (5×5 kernels), and its double backward of a grouped convolution loops over the groups
    (thousands of small convolutions in a dsrna_jb step); this backward is differentiable again
    with whole-tensor convolutions."""

    generate_vmap_rule = True  # torch.func transforms (jacrev, vmap) work through it

    @staticmethod
    def forward(x, w, padding, dilation):
        return F.conv2d(x, w, padding=padding, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, ctx.padding, ctx.dilation = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        C, p, dil = x.shape[1], ctx.padding, ctx.dilation
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, w.flip(2, 3), padding=p, dilation=dil, groups=w.shape[0])
            if w.shape[0] > C:  # sum the n outputs of each input channel
                Bg, _, Hg, Wg = grad_x.shape
                grad_x = grad_x.permute(0, 2, 3, 1).reshape(Bg, Hg, Wg, C, -1).sum(4).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], [p, p], [dil, dil], False, [0, 0], C, [False, True, False])[1]
        return grad_x, grad_w, None, None


def _pointwise(M: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """M (K, J) applied at every pixel of d (B, J, H, W): one (B·H·W, J) × (J, K) product, whose
    result is (B, K, H, W) channels-last with no copy (on the CPU; elsewhere made contiguous, as
    the rest of the network there). d channels-last costs no copy either."""
    B, J, H, W = d.shape
    out = torch.mm(d.permute(0, 2, 3, 1).reshape(B * H * W, J), M.t()).view(B, H, W, -1).permute(0, 3, 1, 2)
    return out if d.device.type == "cpu" else out.contiguous()


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, channels: slice, scale, count: bool) -> torch.Tensor:
    """``bn`` (affine=False) on channels ``channels`` of its statistics, times ``scale`` per
    channel if given: scale·(x − μ)/√(σ² + eps), as nn.BatchNorm2d computes it (batch statistics
    and running-average update in training mode). ``count`` marks the one call per forward that
    advances ``num_batches_tracked``."""
    momentum = bn.momentum
    if bn.training:
        if count:
            bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    mean, var = bn.running_mean[channels], bn.running_var[channels]
    return batch_norm(x, mean, var, scale, None, bn.training, momentum or 0.0, bn.eps)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS' channel_shuffle: channel g·(C/groups) + a moves to a·groups + g."""
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def _shuffled_node(mixed: torch.Tensor, bypass: torch.Tensor, K: int) -> torch.Tensor:
    """channel_shuffle([mixed, bypass], K) in one copy, channels-last on the CPU: with the output
    viewed per pixel as (C/K, K), column 0 is ``mixed`` and column g ≥ 1 is bypass group g − 1."""
    if mixed.device.type != "cpu":
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), K)
    B, c, H, W = mixed.shape
    m = mixed.permute(0, 2, 3, 1).unsqueeze(-1)  # (B, H, W, c, 1)
    b = bypass.permute(0, 2, 3, 1).reshape(B, H, W, K - 1, c).transpose(3, 4)  # (B, H, W, c, K−1)
    return torch.cat([m, b], dim=4).reshape(B, H, W, c * K).permute(0, 3, 1, 2)


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, ``steps`` nodes, mixed edges by source;
    with ``partial_channels`` K > 1 the PC-DARTS edges of the module docstring."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, partial_channels=1):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.C, self.partial_channels = C, partial_channels
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.sources = nn.ModuleList()
        # registered ops the sources do not fuse: one module per (source, edge, op), α column of each
        added = [(k, p) for k, p in enumerate(registered_primitives()) if not p.fused]
        self.added_columns = [k for k, _ in added]
        self.added = nn.ModuleList()
        offsets = [sum(2 + k for k in range(j)) for j in range(steps)]
        for i in range(steps + 1):
            targets = list(range(max(0, i - 1), steps))
            stride = 2 if reduction and i < 2 else 1
            self.sources.append(SourceEdges(C // partial_channels, len(targets), stride))
            self.added.append(nn.ModuleList(
                nn.ModuleDict({p.name: p.builder(C // partial_channels, stride, False) for _, p in added})
                for _ in targets))
            # rows of α (DARTS order: node-major, then input) for the edges leaving source i
            self.register_buffer(f"rows_{i}", torch.tensor([offsets[j] + i for j in targets]), persistent=False)

    def targets(self, i: int) -> range:
        return range(max(0, i - 1), self.steps)

    def added_edges(self, i: int, x: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor | None]:
        """Per edge k leaving source i: Σ_o w[k, o]·o_k(x) over the registered ops the source does not
        fuse (w: the edges' op weights, all registered columns); None per edge when there are none."""
        if not self.added_columns:
            return [None] * len(self.added[i])
        return [sum(w[k, col] * op(x) for col, op in zip(self.added_columns, ops.values()))
                for k, ops in enumerate(self.added[i])]

    def forward(self, s0, s1, weights, edge_weights=None):
        """``weights``: softmax(α) (num_edges, registered ops); ``edge_weights``: β per edge
        (num_edges,), only with partial channels."""
        K = self.partial_channels
        if (edge_weights is None) != (K == 1):
            raise ValueError(f"edge_weights (β) must be given exactly when partial_channels > 1 (here {K})")
        if s1.device.type == "cpu":  # CPU kernels are fastest on channels-last; a no-op after the first cell
            s0, s1 = (s.contiguous(memory_format=torch.channels_last) for s in (s0, s1))
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        acc: list = [None] * self.steps
        bypass: list = [[] for _ in range(self.steps)]  # (β_ij, bypassed channels of source i) per node j
        c = self.C // K
        for i, source in enumerate(self.sources):
            rows = getattr(self, f"rows_{i}")
            x = states[i]
            if K == 1:
                xa, w = x, weights[rows]
            else:
                beta = edge_weights[rows]
                xa, w = x[:, :c], weights[rows] * beta[:, None]
                rest = x[:, c:] if source.stride == 1 else F.max_pool2d(x[:, c:], 2, 2)
                for k, j in enumerate(self.targets(i)):
                    bypass[j].append((beta[k], rest))
            y = source(xa, w[:, : len(FUSED)])
            # split, not y[:, k]: its backward concatenates the edge gradients in y's memory format
            for j, y_j, extra in zip(self.targets(i), y.flatten(1, 2).split(source.C, dim=1),
                                     self.added_edges(i, xa, w)):
                y_j = y_j if extra is None else y_j + extra
                acc[j] = y_j if acc[j] is None else acc[j] + y_j
            if i >= 1:  # node i-1 has now received all its inputs (sources 0..i)
                node = acc[i - 1]
                if K > 1:
                    (b0, r0), *others = bypass[i - 1]
                    rest = b0 * r0
                    for b, r in others:
                        rest = torch.addcmul(rest, b, r)
                    node = _shuffled_node(node, rest, K)
                states.append(node)
        return torch.cat(states[-self.multiplier :], dim=1)


class SearchNetwork(nn.Module):
    """Normalize → stem (3×3 conv, BN) → ``layers`` search cells → global average pool → linear.

    α_normal and α_reduce (each ``num_edges(steps) × len(PRIMITIVES)``, the primitives registered when
    the network is built, kept in ``primitives``) are the architecture parameters; every
    normal cell shares α_normal and every reduction cell α_reduce. With ``partial_channels`` K > 1
    (PC-DARTS, module docstring) the edge-normalisation logits β_normal and β_reduce (each
    ``num_edges(steps)``) are architecture parameters too.
    """

    def __init__(self, C, num_classes, layers, steps=4, multiplier=4, in_channels=3, stem_multiplier=3,
                 mean=None, std=None, partial_channels=1):
        super().__init__()
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("steps", steps),
                            ("multiplier", multiplier), ("in_channels", in_channels),
                            ("partial_channels", partial_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if multiplier > steps:
            raise ValueError(f"multiplier ({multiplier}) cannot exceed steps ({steps})")
        if C % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must divide C={C} (each edge computes on "
                             f"C/partial_channels channels); choose a divisor of C, or 1 for plain DARTS")
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.partial_channels = partial_channels
        self.steps, self.multiplier, self.in_channels = steps, multiplier, in_channels
        self.normalize = Normalize(mean if mean is not None else [0.0] * in_channels,
                                   std if std is not None else [1.0] * in_channels)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in self.reduction_layers(layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev,
                                         partial_channels))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        E = num_edges(steps)
        self.primitives = tuple(PRIMITIVES)  # α's columns, as the cells were built
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(E, len(self.primitives)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(E, len(self.primitives)))
        if partial_channels > 1:
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(E))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(E))

    @staticmethod
    def reduction_layers(layers: int) -> tuple[int, int]:
        return (layers // 3, 2 * layers // 3)

    def arch_parameters(self) -> list[nn.Parameter]:
        """[α_normal, α_reduce], then [β_normal, β_reduce] with partial channels."""
        if self.partial_channels > 1:
            return [self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce]
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(α) per edge, for normal and reduction cells."""
        return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def edge_weights(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """β per edge, softmax over the incoming edges of each node, for normal and reduction cells
        (None, None without partial channels)."""
        if self.partial_channels == 1:
            return None, None
        return edge_normalization(self.betas_normal, self.steps), edge_normalization(self.betas_reduce, self.steps)

    def forward(self, x):
        w_normal, w_reduce = self.op_weights()
        b_normal, b_reduce = self.edge_weights()
        s0 = s1 = self.stem(self.normalize(x))
        for cell in self.cells:
            w, b = (w_reduce, b_reduce) if cell.reduction else (w_normal, b_normal)
            s0, s1 = s1, cell(s0, s1, w, b)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self) -> Genotype:
        """DARTS' derivation; with partial channels on β-weighted op weights, as PC-DARTS."""
        betas = (self.betas_normal, self.betas_reduce) if self.partial_channels > 1 else (None, None)
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.steps, self.multiplier, *betas,
                               primitives=self.primitives)
