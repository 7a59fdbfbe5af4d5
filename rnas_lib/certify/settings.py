"""The settings of a bound or a certificate, as one frozen, validated object."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..attacks import check_norm
from .primitives import RELU_SLOPES

NORMS = ("inf", 2)
METHODS = ("ibp", "crown-ibp", "crown-forward", "crown", "alpha-crown")


def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; allowed: {', '.join(METHODS)}")
    return method


@dataclass(frozen=True)
class Settings:
    """How to bound: ``norm`` of the ball ("inf" or 2, any spelling ``check_norm`` accepts), bound
    ``method`` (METHODS), ``clip`` box (low, high) that the ball is intersected with (None: no box),
    lower ReLU ``relu_slope`` (RELU_SLOPES), ``alpha_steps`` of α-CROWN; for the radius search the
    float64 ``recheck`` of float32 certificates, the largest radius ``eps_max`` (None: the whole
    box, set by the search) and the bracket's resolution max(``tol``, ``rtol``·r).
    Every value is checked on construction (one ValueError naming it and what is allowed)."""

    norm: str | int = "inf"
    method: str = "crown"
    clip: tuple | None = (0.0, 1.0)
    relu_slope: str = "adaptive"
    alpha_steps: int = 20
    recheck: bool = True
    eps_max: float | None = None
    tol: float = 1e-6
    rtol: float = 0.01

    def __post_init__(self):
        check_method(self.method)
        if self.relu_slope not in RELU_SLOPES:
            raise ValueError(f"unknown relu_slope {self.relu_slope!r}; allowed: {', '.join(RELU_SLOPES)}")
        object.__setattr__(self, "norm", check_norm(self.norm))
        if self.clip is not None and (len(self.clip) != 2 or not self.clip[0] < self.clip[1]):
            raise ValueError(f"clip must be None or (low, high) with low < high, got {self.clip!r}")
        steps = self.alpha_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"alpha_steps must be an integer ≥ 1, got {steps!r}")
        object.__setattr__(self, "alpha_steps", int(steps))
        for name, v in (("tol", self.tol), ("rtol", self.rtol)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number ≥ 0 (the bracket's resolution), got {v!r}")
        if not (self.tol > 0 or self.rtol > 0):
            raise ValueError(f"tol and rtol cannot both be 0 (the search would never stop); got tol={self.tol!r}, "
                             f"rtol={self.rtol!r}")
        v = self.eps_max
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ValueError(f"eps_max must be a positive number, got {v!r}")
