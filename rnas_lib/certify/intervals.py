"""Interval bound propagation (IBP).

For an affine map y = Wz + b and z ∈ [z̲, z̄], y ∈ W·mid ± |W|·rad (mid, rad the centre and
radius); ReLU and max pool are monotone, so they map interval ends to interval ends. For an ℓ2
ball, nodes that are one convolution of the input (up to per-channel affine maps on either side,
e.g. Normalize → stem conv → BN) get the exact ℓ2 interval  f(x) ± ε‖row‖₂, intersected with the
box interval.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .ball import Ball
from .graph import BoundGraph
from .primitives import ChannelAffine, Conv


class Intervals:
    """Node intervals, propagated lazily from the ball's box through the affine nodes and through
    every nonlinear node *from its refined bounds* ``pre`` where there are (a dict shared with the
    bounds that relax it, so refining one layer tightens the intervals of all later ones)."""

    def __init__(self, g: BoundGraph, ball: Ball, pre: dict):
        self.g, self.ball, self.pre = g, ball, pre
        self.known: list[tuple] = [ball.box]
        self.rows2 = {0: torch.ones_like(ball.x[:1])} if ball.norm == 2 else {}  # squared ℓ2 row norms
        self.diagonal = {0}  # nodes whose rows are per-pixel scalings of the input

    def get(self, i: int) -> tuple:
        """(l, u) of node i."""
        g = self.g
        while len(self.known) <= i:
            j = len(self.known)
            op, ins = g.ops[j], g.inputs[j]
            if op.nonlinear:
                l, u = self.pre[ins[0]] if ins[0] in self.pre else self.known[ins[0]]
                self.known.append(op.interval(l, u))
                continue
            mids = [(self.known[k][0] + self.known[k][1]) / 2 for k in ins]
            rads = [(self.known[k][1] - self.known[k][0]) / 2 for k in ins]
            m, r = op.forward(*mids), op.abs_linear(*rads)
            l, u = m - r, m + r
            if self.ball.norm == 2:
                l, u = self.l2_interval(j, op, ins, l, u)
            self.known.append((l, u))
        return self.known[i]

    def l2_interval(self, j, op, ins, l, u):
        """Exact ℓ2 bounds f(x) ± ε‖row‖₂ where node j is (channel affine ∘) conv (∘ channel affine) of x."""
        z = ins[0] if len(ins) == 1 else None
        if isinstance(op, ChannelAffine) and z in self.rows2:
            self.rows2[j] = self.rows2[z] * op.scale**2
            if z in self.diagonal:
                self.diagonal.add(j)
        elif isinstance(op, Conv) and z in self.diagonal:
            self.rows2[j] = F.conv2d(self.rows2[z], op.w**2, None, op.stride, op.padding, op.dilation, op.groups)
        else:
            return l, u
        rad = self.ball.eps * self.rows2[j].sqrt()
        v = self.g.values[j]
        return torch.maximum(l, v - rad), torch.minimum(u, v + rad)


def ibp_intermediate(state) -> None:
    """The bounds that relax every ReLU / max pool of a ``state.BoundState``: its input's interval
    (IBP and CROWN-IBP)."""
    for z in sorted(state.consumers):
        state.pre[z] = state.interval(z)
