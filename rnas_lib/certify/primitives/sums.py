"""Affine maps that add: the α-weighted sum of a mixed edge, node sums, and the fused supernet's
mixed edges of one source."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...supernet import AVG, MAX, SKIP
from .base import Affine


class WeightedSum(Affine):
    """Σ_i w_i z_i (w_i scalars, e.g. softmax(α)_o of a mixed edge; None means all ones)."""

    local = "pointwise"

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


class EdgeSum(Affine):
    """A supernet node: Σ_i (edge k_i of source i), each source's edges stacked edge-major (C each)."""

    local = "pointwise"

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


class MixedEdges(Affine):
    """The n mixed edges of one source (SourceEdges): for edge e,
    y_e = Σ_{o∈conv} w_{e,o}·conv_{o,e} + w_{e,max}·mp + w_{e,avg}·ap + w_{e,skip}·skip_e,
    inputs (conv outputs (B, 4nC) op-major then edge-major, mp (B, C), ap (B, C), skip (B, C) or
    (B, nC)); output (B, nC) edge-major. The weights are softmax(α) ≥ 0, so |L| = L."""

    local = "pointwise"

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
