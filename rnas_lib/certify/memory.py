"""Linear bounds kept from a failed probe of the radius search, reused on every smaller ball.

Full CROWN refines the neurons of every ReLU / max-pool input with backward passes, each giving a
linear function z_i ≥ Λ·x' + β (or z_i ≤ …) that is sound over the ball B(ε_f) it was built for,
hence over every smaller ball B(ε) ⊂ B(ε_f). After a probe at ε_f fails, the search only probes
below ε_f, so those functions, concretised on B(ε) (tighter than on B(ε_f)), bound the same
neurons there without a backward pass: a neuron they already decide (a stable ReLU, a dominated
max-pool candidate) is relaxed exactly and not refined again. The others are refined at ε as usual,
and the tighter of the two bounds is used. So every relaxation a fresh probe would close is
closed too (a closed one is exact, whatever its bounds), the open ones are refined at ε as before,
and only the neurons that stay undecided cost a pass
(tests/test_probe_memory.py checks both, and that the radii agree).
"""
from __future__ import annotations

import math

import torch

from .ball import Ball


class ProbeMemory:
    """The refined linear bounds of one image's smallest failed probe so far, per node z:
    (rows (1, S), Λ (1, S, n), β (1, S)) as ``refine.crown_bounds`` returns them (row i < N:
    z_i ≥ Λ·x' + β, row N + i: z_i ≤ Λ·x' + β; −1: padding), valid on every ball of radius ≤ ``eps``
    around the same image."""

    def __init__(self):
        self.eps = math.inf
        self.rows: dict[int, tuple] = {}

    def usable(self, ball: Ball) -> bool:
        """Whether the kept bounds hold on ``ball``: one image, a radius no larger than theirs."""
        return bool(self.rows) and len(ball.x) == 1 and float(ball.eps) <= self.eps

    def bounds(self, z: int, ball: Ball, shape) -> tuple | None:
        """(l, u) of node z (1, *shape) from its kept functions concretised on ``ball`` (−inf / +inf
        where none is kept), or None when nothing is kept for z."""
        if z not in self.rows:
            return None
        rows, coef, offset = self.rows[z]
        N = math.prod(shape)
        sign = torch.where(rows < N, 1.0, -1.0).to(coef.dtype)  # an upper bound is −(the lower bound of −z_i)
        signed = (sign.unsqueeze(2) * coef.flatten(2)).view(*coef.shape[:2], *ball.x.shape[1:])
        value = offset + sign * ball.concretize(signed)
        bound = torch.cat([value.new_full((1, N), -math.inf), value.new_full((1, N), math.inf)], 1)
        keep = rows >= 0
        bound[:, rows[keep]] = value[keep]
        return bound[:, :N].view(1, *shape), bound[:, N:].view(1, *shape)

    def remember(self, eps: float, refined: dict[int, tuple]) -> None:
        """After a failed probe at ``eps`` with the newly refined functions ``refined`` (node → rows,
        Λ, β): below ``eps`` they and the kept ones of the neurons not refined again all hold. They
        are kept detached: a bound read from a memory carries no gradient through them."""
        if eps > self.eps:
            return  # a larger ball's bounds are looser on every probe still to come
        refined = {z: tuple(t.detach() for t in parts) for z, parts in refined.items()}
        merged = {}
        for z in self.rows.keys() | refined.keys():
            parts = [p for p in (self.rows.get(z), refined.get(z)) if p is not None]
            if len(parts) == 2:
                (old_rows, old_coef, old_offset), new = parts
                stale = torch.isin(old_rows, new[0]) | (old_rows < 0)
                parts = [(old_rows[~stale][None], old_coef[~stale][None], old_offset[~stale][None]), new]
            merged[z] = tuple(torch.cat(t, 1) for t in zip(*parts))
        self.eps, self.rows = eps, merged
