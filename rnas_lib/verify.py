"""Certified radius per sample: the largest ε whose margin lower bound is still positive.

For a correctly classified x with label y, any ε with  lb(ε) > 0,  where lb(ε) is a lower bound of
min_{t∈T} f_y(x') − f_t(x') over the ε-ball (``rnas_lib.bounds.margin_lower_bound``), certifies
that no x' in that ball is classified as a t ∈ T. ``certified_radius`` finds the largest such ε on
[0, eps_max] by bisection, for all samples at once: after ⌈log₂(eps_max / tol)⌉ halvings the
returned radius r has lb(r) > 0 (it was checked) and the last rejected ε is at most r + tol.
T (the CNN-Cert target types): ``untargeted`` all t ≠ y; ``runner-up`` the class with the
second-highest clean logit; ``random`` a class t ≠ y drawn uniformly (seeded by ``generator``);
``least-likely`` the class with the lowest clean logit.
A misclassified sample has radius 0. A sample certified at eps_max gets radius eps_max (a cap).
BatchNorm in train mode uses the statistics of the whole clean batch x (see rnas_lib.bounds):
certify models in eval mode unless that is what you mean.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .bounds import margin_lower_bound, trace

TARGETS = ("untargeted", "runner-up", "random", "least-likely")


def target_classes(logits: torch.Tensor, y: torch.Tensor, target: str,
                   generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The class t per sample for a CNN-Cert target type (None for ``untargeted``)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    if target == "untargeted":
        return None
    is_y = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    if target == "runner-up":
        return logits.masked_fill(is_y, -math.inf).argmax(1)
    if target == "least-likely":
        return logits.masked_fill(is_y, math.inf).argmin(1)
    shift = torch.randint(1, logits.shape[1], y.shape, generator=generator, device="cpu").to(y.device)
    return (y + shift) % logits.shape[1]


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", method="crown-ibp",
                     target: str = "untargeted", eps_max: float | None = None, tol: float = 1e-3,
                     clip=(0.0, 1.0), relu_slope: str = "adaptive",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) certified radius in pixel units (ℓ∞ or ℓ2) of each sample, to within ``tol``.

    eps_max defaults to 1 for ℓ∞ (the whole [0, 1] box) and √(C·H·W) for ℓ2 (its diameter)."""
    if not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be a positive number (the bisection's resolution), got {tol!r}")
    if eps_max is None:
        eps_max = 1.0 if norm in ("inf", "linf", math.inf) else math.sqrt(math.prod(x.shape[1:]))
    if not isinstance(eps_max, (int, float)) or not eps_max > 0:
        raise ValueError(f"eps_max must be a positive number, got {eps_max!r}")
    y = torch.as_tensor(y, device=x.device)
    with torch.no_grad():
        logits = trace(model, x).values[-1]
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must hold one label per sample, shape ({x.shape[0]},), got {tuple(y.shape)}")
        targets = target_classes(logits, y, target, generator)
        correct = logits.argmax(1) == y

        def certified(eps: torch.Tensor) -> torch.Tensor:
            m = margin_lower_bound(model, x, y, eps, norm, method, targets=targets, clip=clip, relu_slope=relu_slope)
            return (m > 0) & correct

        lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, float(eps_max))
        top = certified(hi)
        lo = torch.where(top, hi, lo)
        for _ in range(max(0, math.ceil(math.log2(eps_max / tol)))):
            mid = (lo + hi) / 2
            ok = certified(mid)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(correct, lo, torch.zeros_like(lo))
