"""The straightforward DARTS supernet, one module per op per edge: Σ_o w_o · o(x) (as in the
original DARTS code). rnas keeps it as an independent implementation: tests check that the fused
``SearchNetwork`` computes the same function, and ``benchmarks/bench_supernet.py`` times both.
With ``partial_channels`` K > 1 it is PC-DARTS' ``model_search.py``: each edge runs its ops on the
first C/K channels, concatenates the other channels (2×2 max-pooled when the edge has stride 2),
shuffles the channels (groups K), and every edge output is multiplied by its normalised β.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
                _copy_source(src, [ref.ops[int(r)] for r in getattr(cell, f"rows_{i}")])
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
