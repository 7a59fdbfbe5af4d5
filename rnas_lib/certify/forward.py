"""Forward-mode linear bounds: every node carries a lower and an upper linear function of the
input x' (Λ̲·x' + β̲ ≤ node ≤ Λ̄·x' + β̄), pushed through affine nodes as a centre and radius,
L·(Λ̲+Λ̄)/2 ∓ |L|·(Λ̄−Λ̲)/2, and through ReLU / max pool by their relaxations; concretised on the
ball, they bound every node. They carry one row per input pixel, so their cost grows with the input
dimension n, not with the number of neurons.

A node's bounds are held as (centre Λ, radius Λ, centre β, radius β), Λ as (B·n, *shape).
"""
from __future__ import annotations

import math

import torch

from .ball import Ball
from .graph import BoundGraph
from .primitives import Const
from .state import BoundState

#: memory that forward-mode linear bounds may take: they carry one row per input pixel through every
#: node, about FORWARD_COPIES live copies of the widest node
FORWARD_MEMORY = 4 * 2**30
FORWARD_COPIES = 8
#: the notebooks' threshold for their default certification method: up to this many pixels (8×8
#: digits) they certify with crown-forward, above it (28×28 MNIST) with crown-ibp
FORWARD_MAX_INPUTS = 256


def forward_mode_images(g: BoundGraph, dtype: torch.dtype | None = None) -> int:
    """How many images of the traced network ``g`` forward-mode linear bounds can carry at once within
    FORWARD_MEMORY, in ``dtype`` (default the trace's; the float64 re-check carries half as many).
    0: not even one; crown then starts from the intervals and backward passes alone."""
    itemsize = torch.finfo(dtype or g.values[0].dtype).bits // 8
    per_image = g.values[0][0].numel() * max(v[0].numel() for v in g.values) * itemsize
    return int(FORWARD_MEMORY // (FORWARD_COPIES * per_image))


def input_linear(ball: Ball):
    """(centre Λ, radius Λ, centre β, radius β) of node 0: x' = I·x'; Λ as (B·n, *shape), n = #pixels."""
    x = ball.x
    B, n = x.shape[0], x[0].numel()
    eye = torch.eye(n, dtype=x.dtype, device=x.device).view(1, n, *x.shape[1:]).expand(B, -1, *x.shape[1:])
    eye = eye.reshape(B * n, *x.shape[1:])
    return eye, torch.zeros_like(eye), torch.zeros_like(x), torch.zeros_like(x)


def linear_step(state: BoundState, j: int, lin: dict):
    """The forward-mode bounds of node j from those of its inputs ``lin``; a nonlinear node uses
    the relaxation that the backward passes use."""
    g, op, ins = state.g, state.g.ops[j], state.g.inputs[j]
    x = state.ball.x
    B, n = x.shape[0], x[0].numel()
    if isinstance(op, Const):
        v = op.value
        zero = v.new_zeros(B * n, *v.shape[1:])
        return zero, zero, v, torch.zeros_like(v)
    if op.nonlinear:
        cL, rL, cb, rb = lin[ins[0]]
        lowL, upL, lowb, upb = op.forward_linear(cL - rL, cL + rL, cb - rb, cb + rb, state.relaxation(j), n,
                                                 g.shape(j))
        return (lowL + upL) / 2, (upL - lowL) / 2, (lowb + upb) / 2, (upb - lowb) / 2
    parts = [lin[k] for k in ins]
    return (op.linear(*[p[0] for p in parts]), op.abs_linear(*[p[1] for p in parts]),
            op.forward(*[p[2] for p in parts]), op.abs_linear(*[p[3] for p in parts]))


def concretize_linear(ball: Ball, lin) -> tuple:
    """(l, u) of a node from its forward-mode linear bounds, by concretising each neuron's
    lower and upper linear function over the ball."""
    cL, rL, cb, rb = lin
    x = ball.x
    B, n, shape = x.shape[0], x[0].numel(), cb.shape[1:]

    def per_neuron(L):  # (B·n, *shape) → (B, N, *input shape)
        return L.reshape(B, n, -1).transpose(1, 2).reshape(B, -1, *x.shape[1:])

    l = ball.concretize(per_neuron(cL - rL)).view(B, *shape) + cb - rb
    u = -ball.concretize(per_neuron(-(cL + rL))).view(B, *shape) + cb + rb
    return l, u


def tighter_linear(lin, back, use_low, use_up):
    """Forward-mode linear bounds (centre/radius form, Λ as (B·n, *shape)) with the lower / upper
    linear functions of the neurons ``use_low`` / ``use_up`` (B, *shape) replaced by the backward
    ones of ``refine.crown_bounds`` (rows (B, S): i < N the lower bound of neuron i, N + i its upper
    bound, −1 padding; Λ (B, S, n); β (B, S)). Only those columns are written."""
    cL, rL, cb, rb = lin
    rows, coef, offset = back
    B, shape = cb.shape[0], cb.shape[1:]
    N = math.prod(shape)
    n = cL.shape[0] // B
    lowL, upL = (cL - rL).view(B, n, N), (cL + rL).view(B, n, N)
    lowb, upb = (cb - rb).view(B, N), (cb + rb).view(B, N)
    use = torch.cat([use_low.reshape(B, N), use_up.reshape(B, N)], 1)
    for b in range(B):
        keep = (rows[b] >= 0) & use[b].gather(0, rows[b].clamp(min=0))
        for side, L, beta in ((rows[b] < N, lowL, lowb), (rows[b] >= N, upL, upb)):
            k = keep & side
            neurons = rows[b][k] % N
            L[b].index_copy_(1, neurons, coef[b][k].transpose(0, 1))
            beta[b].index_copy_(0, neurons, offset[b][k])
    lowL, upL, lowb, upb = lowL.view_as(cL), upL.view_as(cL), lowb.view_as(cb), upb.view_as(cb)
    return (lowL + upL) / 2, (upL - lowL) / 2, (lowb + upb) / 2, (upb - lowb) / 2
