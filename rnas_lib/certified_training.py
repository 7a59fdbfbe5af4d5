"""Certified (bound-based) training: the loss on the worst case that a bound certifies over the ε-ball.

For an image x with label y and the ball B = {x' : ‖x' − x‖_p ≤ ε, x' ∈ [0, 1]ⁿ}, a bound gives
m_t ≤ min_{x'∈B} f_y(x') − f_t(x') for every class t ≠ y (``rnas_lib.bounds.spec_bounds`` on the rows
e_y − e_t). The **worst-case logits** z̃_y = 0, z̃_t = −m_t satisfy z̃_t − z̃_y ≥ f_t(x') − f_y(x') for
every x' ∈ B, so CE(z̃, y) = log Σ_t exp(z̃_t − z̃_y) ≥ max_{x'∈B} CE(f(x'), y): minimising it pushes
every certified margin up. The loss (CROWN-IBP, Zhang et al., ICLR 2020):

    L = κ·CE(f(x), y) + (1 − κ)·CE(z̃(m_β), y),   m_β = β·m_CROWN-IBP + (1 − β)·m_IBP,

with ``method="ibp"`` m_β = m_IBP (Gowal et al. 2018). At ε = 0 the bounds are the clean margins and
CE(z̃, y) = CE(f(x), y) (the cross-entropy does not change when all logits move together).

Schedules over the training steps (``CertifiedSchedule``): ε = 0 during ``warmup_epochs``, then ramps
to ``eps`` over ``ramp_epochs`` ("linear", or "smooth": the smoothstep 3u² − 2u³ of the ramp's
fraction u, which starts and ends gently), and stays there; κ goes from ``kappa_start`` to
``kappa_end`` and β from ``beta_start`` to ``beta_end`` along the same ramp.

BatchNorm, as certified training does it: in train mode the bound holds the statistics of the clean
batch fixed over the ball (``rnas_lib.certify.trace_layers``), so the certified function is the
network with those statistics; the running statistics are updated by the clean forward pass alone.
Drop path acts on the clean forward pass only: the bound is of the network without it, the one
evaluated and certified at test time.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METHODS = ("ibp", "crown-ibp")
RAMPS = ("linear", "smooth")
DEFAULTS = {"method": "crown-ibp", "norm": "inf", "warmup_epochs": 0, "ramp_epochs": None, "ramp": "linear",
            "kappa_start": 1.0, "kappa_end": 0.0, "beta_start": 1.0, "beta_end": 0.0}


def certified_settings(settings: dict, epochs: int) -> dict:
    """The full certified-training settings: eps (required, pixel units), method, norm, warmup_epochs,
    ramp_epochs (None: half of the epochs after the warm-up), ramp, kappa_start/end, beta_start/end;
    ValueError naming the first bad one."""
    from .attacks import check_norm

    if not isinstance(settings, dict) or "eps" not in settings:
        raise ValueError("certified must be None or a dict with at least 'eps', e.g. {'eps': 0.1, 'method': "
                         f"'crown-ibp'}}, got {settings!r}")
    unknown = set(settings) - set(DEFAULTS) - {"eps"}
    if unknown:
        raise ValueError(f"certified has no settings {sorted(unknown)}; allowed: eps, {', '.join(DEFAULTS)}")
    full = {**DEFAULTS, **settings}
    eps = full["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < math.inf:
        raise ValueError(f"certified eps must be a number ≥ 0 (pixel units), got {eps!r}")
    full["eps"] = float(eps)
    full["norm"] = check_norm(full["norm"])
    if full["method"] not in METHODS:
        raise ValueError(f"certified method {full['method']!r} is not a training bound; allowed: {', '.join(METHODS)}")
    if full["ramp"] not in RAMPS:
        raise ValueError(f"certified ramp {full['ramp']!r} unknown; allowed: {', '.join(RAMPS)}")
    warmup = full["warmup_epochs"]
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup < epochs:
        raise ValueError(f"certified warmup_epochs must be an integer in 0..{epochs - 1} (the training has {epochs} "
                         f"epochs), got {warmup!r}")
    if full["ramp_epochs"] is None:
        full["ramp_epochs"] = max(1, (epochs - warmup) // 2)
    ramp = full["ramp_epochs"]
    if isinstance(ramp, bool) or not isinstance(ramp, int) or not 1 <= ramp <= epochs - warmup:
        raise ValueError(f"certified ramp_epochs must be an integer in 1..{epochs - warmup} (epochs after the "
                         f"warm-up), got {ramp!r}")
    for name in ("kappa_start", "kappa_end", "beta_start", "beta_end"):
        value = full[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"certified {name} must be in [0, 1], got {value!r}")
        full[name] = float(value)
    return full


class CertifiedSchedule:
    """ε, κ and β at every training step (see the module docstring); ``steps_per_epoch`` batches an epoch."""

    def __init__(self, settings: dict, steps_per_epoch: int):
        self.settings = settings
        self.steps_per_epoch = steps_per_epoch

    def ramp_fraction(self, step: int) -> float:
        """u ∈ [0, 1]: how far the ramp has gone at ``step`` (0 during the warm-up); smoothed if asked."""
        start = self.settings["warmup_epochs"] * self.steps_per_epoch
        length = self.settings["ramp_epochs"] * self.steps_per_epoch
        u = min(max((step - start) / length, 0.0), 1.0)
        return u * u * (3 - 2 * u) if self.settings["ramp"] == "smooth" else u

    def at(self, step: int) -> tuple[float, float, float]:
        """(ε, κ, β) at ``step`` (0-based, counted over all epochs)."""
        u, s = self.ramp_fraction(step), self.settings
        return (s["eps"] * u, s["kappa_start"] + (s["kappa_end"] - s["kappa_start"]) * u,
                s["beta_start"] + (s["beta_end"] - s["beta_start"]) * u)


def worst_case_logits(margins: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, K) logits with 0 at y and −m_t at every t ≠ y, from margin lower bounds (B, K − 1) whose
    columns are the classes t ≠ y in increasing order (``rnas_lib.bounds.margin_spec``)."""
    from .certify.certificates import other_classes

    B, K = margins.shape[0], margins.shape[1] + 1
    return torch.zeros(B, K, dtype=margins.dtype, device=margins.device).scatter(1, other_classes(y, K), -margins)


def certified_margins(model, x, y, eps: float, norm, method: str, beta: float) -> torch.Tensor:
    """(B, K − 1) lower bounds of f_y − f_t over the ball: IBP's, or β·CROWN-IBP's + (1 − β)·IBP's."""
    from .bounds import margin_spec, num_classes, spec_bounds, trace

    graph = trace(model, x)
    spec = margin_spec(y, num_classes(model), dtype=x.dtype)
    ibp = spec_bounds(model, x, spec, eps, norm, "ibp", graph=graph)
    if method == "ibp" or beta == 0:
        return ibp
    crown_ibp = spec_bounds(model, x, spec, eps, norm, "crown-ibp", graph=graph)
    return beta * crown_ibp + (1 - beta) * ibp if beta < 1 else crown_ibp


def certified_loss(model, x, y, natural: torch.Tensor, eps: float, norm="inf", method: str = "crown-ibp",
                   kappa: float = 0.0, beta: float = 1.0) -> torch.Tensor:
    """κ·``natural`` + (1 − κ)·CE of the worst-case logits (module docstring); ``natural`` is the
    clean batch's loss (``rnas_lib.train.training_loss``, with the auxiliary head's term if weighted)."""
    if kappa >= 1:
        return natural
    worst = worst_case_logits(certified_margins(model, x, y, eps, norm, method, beta), y)
    return kappa * natural + (1 - kappa) * F.cross_entropy(worst, y)
