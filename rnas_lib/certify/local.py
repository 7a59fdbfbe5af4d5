"""The backward pass of rows that start local (full CROWN's intermediate neurons).

A neuron of an intermediate node depends on its receptive field only: its coefficients Λ on every
earlier node are zero outside a window that grows by each layer's kernel (and halves with each
stride). Rows of nearby neurons are carried as crops of the node maps, each with its window's
top-left corner ``at`` in the map (None: the whole map). Every spatial primitive maps a crop to the
crop its input needs (``local_transpose``, ``local_backward``); per-pixel maps keep the window;
a primitive without a local rule gets the crop zero-padded to the whole map. The result is the
linear function ``backward.backward`` computes, with fewer numbers carried.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .primitives.base import cut
from .state import BoundState


def local_backward(state: BoundState, start: int, A: torch.Tensor, at: tuple[int, int] | None):
    """``backward.backward`` for Λ on node ``start`` given as the crop A (B, S, C, h, w) at ``at``
    (zero outside it): (Λ over the whole input (B, S, *input shape), β (B, S))."""
    g = state.g
    acc = {start: (A, at)}
    offset = A.new_zeros(A.shape[:2])
    for i in range(start, 0, -1):
        if i not in acc:
            continue
        A, at = acc.pop(i)
        b, outs = step(state, i, A.contiguous(), at)
        if b is not None:
            offset = offset + b
        for j, (a, a_at) in zip(g.inputs[i], outs):
            acc[j] = (a, a_at) if j not in acc else add(acc[j], (a, a_at), g.shape(j))
    if 0 not in acc:
        return None, offset
    A, at = acc[0]
    return (A if at is None else whole(A, at, g.shape(0))), offset


def step(state: BoundState, i: int, A: torch.Tensor, at):
    """(β term or None, [(crop of Λ, its top-left)] per input) of node i for Λ on it given as the crop
    A at ``at``: the node's local rule, its dense one where the crop is the whole map (at None)."""
    g, op = state.g, state.g.ops[i]
    shapes = [g.shape(j) for j in g.inputs[i]]
    if op.local is None and at is not None:
        A, at = whole(A, at, g.shape(i)), None
    if op.nonlinear:
        if at is None:
            A_in, b = op.backward(A, state.relaxation(i))
            return b, [(A_in, None)]
        A_in, b, at_in = op.local_backward(A, state.relaxation(i), at)
        return b, [(A_in, at_in)]
    if at is None:
        return op.bias_term(A), [(a, None) for a in op.transpose(A, shapes)]
    if op.local == "pointwise":
        return op.local_bias_term(A, at), [(a, at) for a in op.transpose(A, shapes)]
    return op.local_bias_term(A, at), op.local_transpose(A, at, shapes)


def whole(A: torch.Tensor, at: tuple[int, int], size) -> torch.Tensor:
    """The crop A at ``at`` zero-padded to the whole map of ``size`` (C, H, W)."""
    H, W = size[-2:]
    h, w = A.shape[-2:]
    return F.pad(A, (at[1], W - at[1] - w, at[0], H - at[0] - h))


def add(x, y, size):
    """The sum of two crops (A, at) of a map of ``size``, on the window that covers both."""
    (A, a), (B, b) = x, y
    if a == b and A.shape == B.shape:
        return A + B, a
    if a is None or b is None:
        return (A if a is None else whole(A, a, size)) + (B if b is None else whole(B, b, size)), None
    top, left = min(a[0], b[0]), min(a[1], b[1])
    bottom = max(a[0] + A.shape[-2], b[0] + B.shape[-2])
    right = max(a[1] + A.shape[-1], b[1] + B.shape[-1])
    box = (*A.shape[:-2], bottom - top, right - left)
    out = whole(A, (a[0] - top, a[1] - left), box)
    out[..., b[0] - top : b[0] - top + B.shape[-2], b[1] - left : b[1] - left + B.shape[-1]] += B
    return cut(out, (top, left), size[-2:])
