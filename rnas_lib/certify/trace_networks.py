"""Trace rules for whole networks: the discrete Network (rnas_lib.network) and the supernets
(the fused SearchNetwork of rnas_lib.supernet, with or without partial channels, and the per-op
reference cells of rnas_lib.reference). Each records its stem and cells as blocks of the graph.
Drop path is ignored (the bounded network is the deterministic one)."""
from __future__ import annotations

import torch
from torch import nn

from ..network import Cell, Network
from ..ops import PRIMITIVES
from ..reference import ReferenceCell
from ..supernet import FUSED, SearchCell, SearchNetwork, SourceEdges
from .graph import BoundGraph
from .primitives import (AvgPool, ChannelShuffle, Concat, Conv, Crop, EdgeSum, GlobalAvgPool, Linear, MixedEdges, Repeat,
                         Slice, WeightedSum)
from .trace import register_trace_rule, trace_module
from .trace_layers import trace_batchnorm


def head(g: BoundGraph, net: nn.Module, z: int) -> int:
    """Global average pool, then the classifier."""
    return g.add(Linear(net.classifier.weight, net.classifier.bias), g.add(GlobalAvgPool(), z))


@register_trace_rule(Network)
def trace_network(g: BoundGraph, net: Network, z: int) -> int:
    s0 = s1 = g.block("stem", len(g.ops), trace_module(g, net.stem, trace_module(g, net.normalize, z)))
    for k, cell in enumerate(net.cells):
        label = f"cell {k} ({'reduction' if cell.reduction else 'normal'})"
        s0, s1 = s1, g.block(label, len(g.ops), trace_cell(g, cell, s0, s1))
    return head(g, net, s1)


def trace_cell(g: BoundGraph, cell: Cell, s0: int, s1: int) -> int:
    states = [trace_module(g, cell.preprocess0, s0), trace_module(g, cell.preprocess1, s1)]
    for j in range(cell.steps):
        h = [trace_module(g, cell.ops[k], states[cell.indices[k]]) for k in (2 * j, 2 * j + 1)]
        states.append(g.add(WeightedSum(), *h))
    return g.add(Concat(), *[states[i] for i in cell.concat])


@register_trace_rule(SearchNetwork)
def trace_search_network(g: BoundGraph, net: SearchNetwork, z: int) -> int:
    w_normal, w_reduce = net.op_weights()
    b_normal, b_reduce = net.edge_weights()
    s0 = s1 = g.block("stem", len(g.ops), trace_module(g, net.stem, trace_module(g, net.normalize, z)))
    for k, cell in enumerate(net.cells):
        w, b = (w_reduce, b_reduce) if cell.reduction else (w_normal, b_normal)
        first = len(g.ops)
        if isinstance(cell, SearchCell):
            out = trace_search_cell(g, cell, s0, s1, w, b)
        elif isinstance(cell, ReferenceCell) and net.partial_channels > 1:
            raise ValueError("bounds trace the per-op reference supernet without partial channels only; "
                             "bound the fused SearchNetwork with partial_channels instead")
        elif isinstance(cell, ReferenceCell):
            out = trace_reference_cell(g, cell, s0, s1, w)
        else:
            raise ValueError(f"bounds: no rule for search cell {type(cell).__name__}")
        s0, s1 = s1, g.block(f"cell {k} ({'reduction' if cell.reduction else 'normal'})", first, out)
    return head(g, net, s1)


def edge_offsets(steps: int) -> list[int]:
    """Row of α of edge (input 0 → node j), DARTS order: node-major, then input."""
    return [sum(2 + k for k in range(j)) for j in range(steps)]


def trace_search_cell(g: BoundGraph, cell: SearchCell, s0: int, s1: int, w: torch.Tensor,
                       beta: torch.Tensor | None = None) -> int:
    """With partial channels K (β given): node j = shuffle([Σ_i β_ij·mixed_ij(first C/K channels of
    x_i), Σ_i β_ij·bypass_i]), bypass_i the other channels of x_i (2×2 max-pooled at stride 2);
    β_ij scales the op weights of the mixed edge (both ≥ 0)."""
    states = [trace_module(g, cell.preprocess0, s0), trace_module(g, cell.preprocess1, s1)]
    offsets, steps = edge_offsets(cell.steps), cell.steps
    K, C = cell.partial_channels, cell.C
    incoming: list[list[tuple[int, int]]] = [[] for _ in range(steps)]
    bypass: list[list[tuple[torch.Tensor, int]]] = [[] for _ in range(steps)]
    for i, src in enumerate(cell.sources):
        targets = list(range(max(0, i - 1), steps))
        rows = [offsets[j] + i for j in targets]
        if K == 1:
            x, wi = states[i], w[rows]
        else:
            x, wi = g.add(Slice(0, C // K), states[i]), w[rows] * beta[rows, None]
            rest = g.add(Slice(C // K, C), states[i])
            if src.stride == 2:
                rest = g.maxpool(rest, 2, 2, 0)
            for j in targets:
                bypass[j].append((beta[offsets[j] + i], rest))
        y = trace_source(g, src, x, wi[:, : len(FUSED)])
        for k, j in enumerate(targets):
            incoming[j].append((y, k))
        for j, extra in zip(targets, trace_added_edges(g, cell, i, x, wi)):
            incoming[j].append((extra, 0))  # an added edge's output is one edge's C channels
        if i >= 1:  # node i−1 has all its inputs now (sources 0..i)
            ys, ks = zip(*incoming[i - 1])
            node = g.add(EdgeSum(src.C, list(ks)), *ys)
            if K > 1:
                bs, rests = zip(*bypass[i - 1])
                rest = g.add(WeightedSum(list(bs)), *rests)
                node = g.add(ChannelShuffle(K), g.add(Concat(), node, rest))
            states.append(node)
    return g.add(Concat(), *states[-cell.multiplier :])


def trace_added_edges(g: BoundGraph, cell: SearchCell, i: int, x: int, w: torch.Tensor) -> list[int]:
    """The registered ops that source i's SourceEdges does not fuse (SearchCell.added_edges): per edge
    k, Σ_o w[k, o]·o_k(x) over those ops, each op traced through its modules; none without such ops."""
    if not cell.added_columns:
        return []
    return [g.add(WeightedSum([w[k, col] for col in cell.added_columns]), *[trace_module(g, op, x) for op in ops.values()])
            for k, ops in enumerate(cell.added[i])]


def trace_source(g: BoundGraph, src: SourceEdges, x: int, w: torch.Tensor) -> int:
    """The n mixed edges leaving node x, from SourceEdges' parameters (layout in its docstring)."""
    n, C, s = src.n, src.C, src.stride
    nC = n * C
    r = g.relu(x)
    rr = g.add(Repeat(n), r) if n > 1 else r
    dw = [
        g.add(Conv(src.dw_sep3, None, s, 1, 1, nC), rr),
        g.add(Conv(src.dw_sep5, None, s, 2, 1, nC), rr),
        g.add(Conv(src.dw_dil3, None, s, 2, 2, nC), rr),
        g.add(Conv(src.dw_dil5, None, s, 4, 2, nC), rr),
    ]
    p = trace_batchnorm(g, src.bn1, g.add(Conv(src.pw1, groups=4 * n), g.add(Concat(), *dw)))
    q = g.relu(g.add(Slice(0, 2 * nC), p))
    dw2 = [
        g.add(Conv(src.dw2_sep3, None, 1, 1, 1, nC), g.add(Slice(0, nC), q)),
        g.add(Conv(src.dw2_sep5, None, 1, 2, 1, nC), g.add(Slice(nC, 2 * nC), q)),
    ]
    q = trace_batchnorm(g, src.bn2, g.add(Conv(src.pw2, groups=2 * n), g.add(Concat(), *dw2)))
    conv = g.add(Concat(), q, g.add(Slice(2 * nC, 4 * nC), p))
    pooled = trace_batchnorm(g, src.bn_pool, g.add(Concat(), g.maxpool(x, 3, s, 1), g.add(AvgPool(3, s, 1, False), x)))
    mp, ap = g.add(Slice(0, C), pooled), g.add(Slice(C, 2 * C), pooled)
    if s == 1:
        skip = x
    else:
        H, W = g.shape(x)[-2:]
        if H % 2 or W % 2:
            raise ValueError(f"a reduction cell needs an even spatial size, got {(H, W)}")
        a = g.add(Conv(src.fr1, stride=2), r)
        b = g.add(Conv(src.fr2, stride=2), g.add(Crop(), r))
        skip = trace_batchnorm(g, src.bn_fr, g.add(Concat(groups=n), a, b))
    return g.add(MixedEdges(w, n, C, s), conv, mp, ap, skip)


def trace_reference_cell(g: BoundGraph, cell: ReferenceCell, s0: int, s1: int, w: torch.Tensor) -> int:
    """The per-op supernet cell (rnas_lib.reference): each edge Σ_o w_o·o(h), ``none`` dropped."""
    states = [trace_module(g, cell.preprocess0, s0), trace_module(g, cell.preprocess1, s1)]
    offset = 0
    for _ in range(cell.steps):
        terms, weights = [], []
        for i, h in enumerate(states):
            for o, op in enumerate(cell.ops[offset + i].ops):
                if PRIMITIVES[o] != "none":
                    terms.append(trace_module(g, op, h))
                    weights.append(w[offset + i, o])
        offset += len(states)
        states.append(g.add(WeightedSum(weights), *terms))
    return g.add(Concat(), *states[-cell.multiplier :])
