"""The bounds known on a traced graph over one ball: what every bounding mode reads and fills."""
from __future__ import annotations

from .ball import Ball
from .graph import BoundGraph
from .intervals import Intervals


class BoundState:
    """Bounds on the nodes of a traced graph ``g`` over one ``ball`` (per-sample ε).

    ``pre[z]``: the bounds on node z used to relax its nonlinear consumers (ReLU / max pool),
    filled by a mode (``intervals.ibp_intermediate``, ``refine.crown_intermediate``).
    ``relax[i]``: the relaxation of nonlinear node i built from ``pre`` (``relaxation``).
    ``interval(i)``: node i's interval (``intervals.Intervals``), through nonlinear nodes from ``pre``.
    ``consumers[z]``: the nonlinear nodes that read node z.
    """

    def __init__(self, g: BoundGraph, ball: Ball, relu_slope: str = "adaptive"):
        self.g, self.ball, self.relu_slope = g, ball, relu_slope
        self.pre: dict[int, tuple] = {}
        self.relax: dict[int, tuple] = {}
        self.intervals = Intervals(g, ball, self.pre)
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(g.ops):
            if op is not None and op.nonlinear:
                self.consumers.setdefault(g.inputs[i][0], []).append(i)

    def interval(self, i: int) -> tuple:
        return self.intervals.get(i)

    def relaxation(self, i: int):
        """The relaxation of nonlinear node i on its input's ``pre`` bounds (built once)."""
        if i not in self.relax:
            z = self.g.inputs[i][0]
            self.relax[i] = self.g.ops[i].relaxation(*self.pre[z], self.relu_slope)
        return self.relax[i]
