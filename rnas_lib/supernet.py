"""The DARTS supernet: every edge of a cell is a mixed op Σ_o softmax(α)_o · o(x).

rnas computes the mixed edges *by source node*: all edges leaving one node share the ReLU, the
parameter-free pools (and the BatchNorm without affine after them) and the identity, and their
convolutions run as one grouped convolution over the stacked edges. The maths is exactly DARTS'
(``rnas_lib.reference`` keeps the straightforward per-op form; tests compare the two to 1e-5);
only the number of kernel launches changes.

For a source x feeding n edges with op weights w ∈ R^{n×8} (rows sum to 1), edge e gives
    y_e = w_e,max·BN(maxpool x) + w_e,avg·BN(avgpool x) + w_e,skip·skip_e(x) + Σ_{o∈conv} w_e,o·o_e(x)
(the ``none`` op contributes 0·x). Node j of the cell is Σ_{i<j} y_{i→j}; the cell outputs the
concatenation of its last ``multiplier`` nodes. Reduction cells (at 1/3 and 2/3 of the depth)
stride their edges from the two cell inputs by 2. BatchNorm inside search cells has no affine
parameters (DARTS); in training mode it uses the batch statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import Genotype, derive_genotype, num_edges
from .ops import PRIMITIVES, FactorizedReduce, Normalize, ReLUConvBN

#: the order in which SourceEdges stacks its convolutional ops (the last four PRIMITIVES)
CONV_ORDER = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
assert PRIMITIVES[4:] == CONV_ORDER
MAX, AVG, SKIP = PRIMITIVES.index("max_pool_3x3"), PRIMITIVES.index("avg_pool_3x3"), PRIMITIVES.index("skip_connect")


def _conv_weight(out_channels: int, fan_in: int, kernel: int) -> nn.Parameter:
    """A conv weight with PyTorch's default init, U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(out_channels, fan_in // (kernel * kernel), kernel, kernel).uniform_(-bound, bound))


class SourceEdges(nn.Module):
    """The n mixed edges leaving one node, on C channels, with a common stride.

    Weights are stacked edge-major: channel e·C + c belongs to edge e. Stage 1 of all four conv
    ops is depthwise (on ReLU x repeated n times) → one grouped pointwise conv (groups = 4n) →
    BN; stage 2 of the two separable ops is ReLU → depthwise → grouped pointwise (groups = 2n) → BN.
    """

    def __init__(self, C: int, n: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.C, self.n, self.stride = C, n, stride
        nC = n * C
        self.dw_sep3 = _conv_weight(nC, 9, 3)
        self.dw_sep5 = _conv_weight(nC, 25, 5)
        self.dw_dil3 = _conv_weight(nC, 9, 3)
        self.dw_dil5 = _conv_weight(nC, 25, 5)
        self.pw1 = _conv_weight(4 * nC, C, 1)
        self.bn1 = nn.BatchNorm2d(4 * nC, affine=False)
        self.dw2_sep3 = _conv_weight(nC, 9, 3)
        self.dw2_sep5 = _conv_weight(nC, 25, 5)
        self.pw2 = _conv_weight(2 * nC, C, 1)
        self.bn2 = nn.BatchNorm2d(2 * nC, affine=False)
        self.bn_max = nn.BatchNorm2d(C, affine=False)
        self.bn_avg = nn.BatchNorm2d(C, affine=False)
        if stride == 2:
            if C % 2:
                raise ValueError(f"a reduction edge needs an even channel count, got C={C}")
            self.fr1 = _conv_weight(nC // 2, C, 1)
            self.fr2 = _conv_weight(nC // 2, C, 1)
            self.bn_fr = nn.BatchNorm2d(nC, affine=False)

    def conv_ops(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4, n, C, H', W'): sep3, sep5, dil3, dil5 of every edge."""
        n, nC, s = self.n, self.n * self.C, self.stride
        r = F.relu(x).repeat(1, n, 1, 1)
        stage1 = torch.cat(
            [
                F.conv2d(r, self.dw_sep3, stride=s, padding=1, groups=nC),
                F.conv2d(r, self.dw_sep5, stride=s, padding=2, groups=nC),
                F.conv2d(r, self.dw_dil3, stride=s, padding=2, dilation=2, groups=nC),
                F.conv2d(r, self.dw_dil5, stride=s, padding=4, dilation=2, groups=nC),
            ],
            dim=1,
        )
        p = self.bn1(F.conv2d(stage1, self.pw1, groups=4 * n))
        q = F.relu(p[:, : 2 * nC])
        stage2 = torch.cat(
            [
                F.conv2d(q[:, :nC], self.dw2_sep3, padding=1, groups=nC),
                F.conv2d(q[:, nC:], self.dw2_sep5, padding=2, groups=nC),
            ],
            dim=1,
        )
        q = self.bn2(F.conv2d(stage2, self.pw2, groups=2 * n))
        out = torch.cat([q, p[:, 2 * nC :]], dim=1)
        return out.reshape(x.shape[0], 4, n, self.C, *out.shape[-2:])

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, C, H, W) identity, or (B, n, C, H/2, W/2) FactorizedReduce per edge."""
        if self.stride == 1:
            return x.unsqueeze(1)
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(
                f"a reduction cell needs an even spatial size, got {tuple(x.shape[-2:])}; "
                "use an input size divisible by 4 (two reductions)"
            )
        r = F.relu(x)
        a = F.conv2d(r, self.fr1, stride=2)
        b = F.conv2d(r[:, :, 1:, 1:], self.fr2, stride=2)
        B, _, H, W = a.shape
        both = torch.cat([a.view(B, self.n, self.C // 2, H, W), b.view(B, self.n, self.C // 2, H, W)], dim=2)
        return self.bn_fr(both.reshape(B, self.n * self.C, H, W)).reshape(B, self.n, self.C, H, W)

    def pools(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stride
        return (
            self.bn_max(F.max_pool2d(x, 3, s, 1)),
            self.bn_avg(F.avg_pool2d(x, 3, s, 1, count_include_pad=False)),
        )

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, n, C, H', W'): the n mixed-edge outputs for op weights w of shape (n, 8)."""
        mp, ap = self.pools(x)
        wv = w.t().reshape(len(PRIMITIVES), 1, self.n, 1, 1, 1)
        out = (self.conv_ops(x) * wv[4:].transpose(0, 1)).sum(dim=1)
        return out + wv[MAX] * mp.unsqueeze(1) + wv[AVG] * ap.unsqueeze(1) + wv[SKIP] * self.skip(x)


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, ``steps`` nodes, mixed edges by source."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.sources = nn.ModuleList()
        offsets = [sum(2 + k for k in range(j)) for j in range(steps)]
        for i in range(steps + 1):
            targets = list(range(max(0, i - 1), steps))
            stride = 2 if reduction and i < 2 else 1
            self.sources.append(SourceEdges(C, len(targets), stride))
            # rows of α (DARTS order: node-major, then input) for the edges leaving source i
            self.register_buffer(f"rows_{i}", torch.tensor([offsets[j] + i for j in targets]), persistent=False)

    def targets(self, i: int) -> range:
        return range(max(0, i - 1), self.steps)

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        acc: list = [None] * self.steps
        for i, source in enumerate(self.sources):
            y = source(states[i], weights[getattr(self, f"rows_{i}")])
            for k, j in enumerate(self.targets(i)):
                acc[j] = y[:, k] if acc[j] is None else acc[j] + y[:, k]
            if i >= 1:  # node i-1 has now received all its inputs (sources 0..i)
                states.append(acc[i - 1])
        return torch.cat(states[-self.multiplier :], dim=1)


class SearchNetwork(nn.Module):
    """Normalize → stem (3×3 conv, BN) → ``layers`` search cells → global average pool → linear.

    α_normal and α_reduce (each ``num_edges(steps) × 8``) are the architecture parameters; every
    normal cell shares α_normal and every reduction cell α_reduce.
    """

    def __init__(self, C, num_classes, layers, steps=4, multiplier=4, in_channels=3, stem_multiplier=3,
                 mean=None, std=None):
        super().__init__()
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("steps", steps),
                            ("multiplier", multiplier), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if multiplier > steps:
            raise ValueError(f"multiplier ({multiplier}) cannot exceed steps ({steps})")
        self.C, self.num_classes, self.layers = C, num_classes, layers
        self.steps, self.multiplier, self.in_channels = steps, multiplier, in_channels
        self.normalize = Normalize(mean if mean is not None else [0.0] * in_channels,
                                   std if std is not None else [1.0] * in_channels)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in self.reduction_layers(layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        E = num_edges(steps)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(E, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(E, len(PRIMITIVES)))

    @staticmethod
    def reduction_layers(layers: int) -> tuple[int, int]:
        return (layers // 3, 2 * layers // 3)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weights(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(α) per edge, for normal and reduction cells."""
        return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def forward(self, x):
        w_normal, w_reduce = self.op_weights()
        s0 = s1 = self.stem(self.normalize(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def genotype(self) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.steps, self.multiplier)
