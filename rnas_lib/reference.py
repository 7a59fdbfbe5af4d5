"""Straightforward references, one module per op, as in the original DARTS code: the supernet
(Σ_o w_o · o(x) on every edge) and the discrete network of a genotype (DARTS' NetworkCIFAR without
the auxiliary head, its ops written out here from plain torch modules). rnas keeps them as
independent implementations: tests check that the fused ``SearchNetwork`` and ``Network`` compute
the same functions, and ``benchmarks/bench_supernet.py`` times the supernets.
With ``partial_channels`` K > 1 the supernet is PC-DARTS' ``model_search.py``: each edge runs its
ops on the first C/K channels, concatenates the other channels (2×2 max-pooled when the edge has
stride 2), shuffles the channels (groups K), and every edge output is multiplied by its normalised β.
The supernet's ops come from the registry (``make_op``); the discrete network's from ``REFERENCE_OPS``
here, written independently: a primitive added to the registry needs one row there too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .genotypes import get_genotype

from .ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op
from .supernet import CONV_ORDER, SearchNetwork


class MixedOp(nn.Module):
    def __init__(self, C, stride, partial_channels=1):
        super().__init__()
        self.k, self.stride = partial_channels, stride
        self.ops = nn.ModuleList()
        for primitive in PRIMITIVES:
            op = make_op(primitive, C // self.k, stride, affine=False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C // self.k, affine=False))
            self.ops.append(op)

    def forward(self, x, weights):
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        c = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :c]) for w, op in zip(weights, self.ops))
        rest = x[:, c:] if self.stride == 1 else F.max_pool2d(x[:, c:], 2, 2)
        return _channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)


def _channel_shuffle(x, groups):
    """PC-DARTS' channel_shuffle, as written there."""
    batchsize, num_channels, height, width = x.shape
    x = x.view(batchsize, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ReferenceCell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, partial_channels=1):
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.ops = nn.ModuleList(
            MixedOp(C, 2 if reduction and i < 2 else 1, partial_channels) for j in range(steps) for i in range(2 + j)
        )

    def forward(self, s0, s1, weights, edge_weights=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            if edge_weights is None:
                s = sum(self.ops[offset + i](h, weights[offset + i]) for i, h in enumerate(states))
            else:
                s = sum(edge_weights[offset + i] * self.ops[offset + i](h, weights[offset + i])
                        for i, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier :], dim=1)


class ReferenceSearchNetwork(SearchNetwork):
    """SearchNetwork with its cells replaced by per-op ReferenceCells (same stem, head and α)."""

    def __init__(self, C, num_classes, layers, steps=4, multiplier=4, in_channels=3, stem_multiplier=3,
                 mean=None, std=None, partial_channels=1):
        super().__init__(C, num_classes, layers, steps, multiplier, in_channels, stem_multiplier, mean, std,
                         partial_channels)
        fused = self.cells
        self.cells = nn.ModuleList(
            ReferenceCell(steps, multiplier, _in_channels(c.preprocess0), c.preprocess1.op[1].in_channels,
                          c.C, c.reduction, isinstance(c.preprocess0, FactorizedReduce), partial_channels)
            for c in fused
        )

    @torch.no_grad()
    def load_from(self, net: SearchNetwork) -> "ReferenceSearchNetwork":
        """Copy every weight, α (and β) and BN statistic of a fused SearchNetwork into this one."""
        if net.partial_channels != self.partial_channels:
            raise ValueError(f"cannot load a supernet with partial_channels={net.partial_channels} into a "
                             f"reference with partial_channels={self.partial_channels}; build it with the same K")
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not name.startswith("cells."):
                own[name].copy_(t)
        for ref, cell in zip(self.cells, net.cells):
            ref.preprocess0.load_state_dict(cell.preprocess0.state_dict())
            ref.preprocess1.load_state_dict(cell.preprocess1.state_dict())
            for i, src in enumerate(cell.sources):
                mixed_ops = [ref.ops[int(r)] for r in getattr(cell, f"rows_{i}")]
                _copy_source(src, mixed_ops)
                for mixed, added in zip(mixed_ops, cell.added[i]):  # registered ops the source does not fuse
                    for col, op in zip(cell.added_columns, added.values()):
                        mixed.ops[col].load_state_dict(op.state_dict())
        return self


def _in_channels(pre: nn.Module) -> int:
    return pre.conv_1.in_channels if isinstance(pre, FactorizedReduce) else pre.op[1].in_channels


def _copy_source(src, mixed_ops) -> None:
    C = src.C
    for e, mixed in enumerate(mixed_ops):
        ch = slice(e * C, (e + 1) * C)
        for o, name in enumerate(CONV_ORDER):
            op = mixed.ops[PRIMITIVES.index(name)].op
            first = op[0].op if name.startswith("sep") else op
            first[1].weight.copy_(getattr(src, _DW[name])[ch])
            first[2].weight.copy_(src.pw1[(o * src.n + e) * C : (o * src.n + e + 1) * C])
            _copy_bn(first[3], src.bn1, (o * src.n + e) * C, C)
            if name.startswith("sep"):
                second = op[1].op
                second[1].weight.copy_(getattr(src, _DW2[name])[ch])
                second[2].weight.copy_(src.pw2[(o * src.n + e) * C : (o * src.n + e + 1) * C])
                _copy_bn(second[3], src.bn2, (o * src.n + e) * C, C)
        _copy_bn(mixed.ops[PRIMITIVES.index("max_pool_3x3")][1], src.bn_pool, 0, C)
        _copy_bn(mixed.ops[PRIMITIVES.index("avg_pool_3x3")][1], src.bn_pool, C, C)
        if src.stride == 2:
            fr = mixed.ops[PRIMITIVES.index("skip_connect")]
            half = slice(e * C // 2, (e + 1) * C // 2)
            fr.conv_1.weight.copy_(src.fr1[half])
            fr.conv_2.weight.copy_(src.fr2[half])
            _copy_bn(fr.bn, src.bn_fr, e * C, C)


_DW = {"sep_conv_3x3": "dw_sep3", "sep_conv_5x5": "dw_sep5", "dil_conv_3x3": "dw_dil3", "dil_conv_5x5": "dw_dil5"}
_DW2 = {"sep_conv_3x3": "dw2_sep3", "sep_conv_5x5": "dw2_sep5"}


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, start: int, C: int) -> None:
    dst.running_mean.copy_(src.running_mean[start : start + C])
    dst.running_var.copy_(src.running_var[start : start + C])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


# --------------------------------------------------------------------------- the discrete network
class _ReLUConvBN(nn.Module):
    """ReLU → conv → BN (DARTS' ReLUConvBN)."""

    def __init__(self, C_in, C_out, kernel, stride, padding):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False),
                                nn.BatchNorm2d(C_out))

    def forward(self, x):
        return self.op(x)


def _dil_conv(C, kernel, stride, padding, dilation) -> nn.Sequential:
    """DARTS' DilConv: ReLU → depthwise (dilated) conv → pointwise conv → BN."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, kernel, stride, padding, dilation, groups=C, bias=False),
                         nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C))


def _sep_conv(C, kernel, stride, padding) -> nn.Sequential:
    """DARTS' SepConv: the DilConv block twice (dilation 1), only the first strided; one flat Sequential."""
    return nn.Sequential(*_dil_conv(C, kernel, stride, padding, 1), *_dil_conv(C, kernel, 1, padding, 1))


class _FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out):
        super().__init__()
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x):
        x = torch.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class _Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class _Identity(nn.Module):
    def forward(self, x):
        return x


#: DARTS' OPS table, one row per primitive: name → (C, stride) → module (affine BatchNorm)
REFERENCE_OPS = {
    "none": lambda C, stride: _Zero(stride),
    "avg_pool_3x3": lambda C, stride: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride: _Identity() if stride == 1 else _FactorizedReduce(C, C),
    "sep_conv_3x3": lambda C, stride: _sep_conv(C, 3, stride, 1),
    "sep_conv_5x5": lambda C, stride: _sep_conv(C, 5, stride, 2),
    "dil_conv_3x3": lambda C, stride: _dil_conv(C, 3, stride, 2, 2),
    "dil_conv_5x5": lambda C, stride: _dil_conv(C, 5, stride, 4, 2),
}


def _op(name: str, C: int, stride: int) -> nn.Module:
    if name not in REFERENCE_OPS:
        raise ValueError(f"the reference network has no row for primitive {name!r} (rows: "
                         f"{', '.join(REFERENCE_OPS)}); add one to rnas_lib.reference.REFERENCE_OPS")
    return REFERENCE_OPS[name](C, stride)


def _drop_path(x, drop_prob):
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x.div(keep).mul(mask)


class _ReferenceCell(nn.Module):
    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (_FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else _ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = _ReLUConvBN(C_prev, C, 1, 1, 0)
        op_names, indices = zip(*(genotype.reduce if reduction else genotype.normal))
        self._concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self._steps = len(op_names) // 2
        self._indices = indices
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList(_op(name, C, 2 if reduction and index < 2 else 1)
                                  for name, index in zip(op_names, indices))

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            h1 = self._ops[2 * i](states[self._indices[2 * i]])
            h2 = self._ops[2 * i + 1](states[self._indices[2 * i + 1]])
            if self.training and drop_prob > 0.0:
                if not isinstance(self._ops[2 * i], _Identity):
                    h1 = _drop_path(h1, drop_prob)
                if not isinstance(self._ops[2 * i + 1], _Identity):
                    h2 = _drop_path(h2, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class ReferenceNetwork(nn.Module):
    """DARTS' NetworkCIFAR (no auxiliary head) behind rnas's input normalisation: (x − mean)/std →
    stem (3×3 conv, BN) → cells (reductions at layers//3 and 2·layers//3) → global average pool →
    linear. Same constructor as ``rnas_lib.network.Network``."""

    def __init__(self, genotype, C, num_classes, layers, in_channels=3, stem_multiplier=3, mean=None, std=None,
                 drop_path_prob: float = 0.0):
        super().__init__()
        genotype = get_genotype(genotype)
        self.drop_path_prob = drop_path_prob
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0] * in_channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0] * in_channels).view(1, -1, 1, 1))
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = _ReferenceCell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem((x - self.mean) / self.std)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return self.classifier(self.global_pooling(s1).view(s1.size(0), -1))

    @torch.no_grad()
    def load_from(self, net: nn.Module) -> "ReferenceNetwork":
        """Copy every parameter and buffer of an ``rnas_lib.network.Network`` of the same genotype and
        shape (both register them in DARTS' order, so they pair up one by one)."""
        own = list(self.state_dict().items())
        theirs = list(net.state_dict().items())
        if len(own) != len(theirs):
            raise ValueError(f"the networks differ: {len(own)} tensors here, {len(theirs)} in {type(net).__name__}")
        for (name, dst), (src_name, src) in zip(own, theirs):
            if dst.shape != src.shape:
                raise ValueError(f"{name} {tuple(dst.shape)} cannot take {src_name} {tuple(src.shape)}")
            dst.copy_(src)
        return self
