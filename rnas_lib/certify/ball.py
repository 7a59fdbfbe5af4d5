"""The ball B = {x' : ‖x' − x‖_p ≤ ε} ∩ [low, high]ⁿ (p = ∞ or 2, ε in pixel units, one per sample),
and the concretisation of linear bounds over it (dual norms):
    ℓ∞:  min_{x'∈B} Λ·x' = Λ·x − ε‖Λ‖₁  (with the box: Λ·mid − |Λ|·rad of the clipped box)
    ℓ2:  min_{x'∈B} Λ·x' = Λ·x − ε‖Λ‖₂  (with the box: the larger of this and the bound over the
         clipped ℓ∞ box of radius ε, which contains B ∩ [0, 1]ⁿ — both are sound).
"""
from __future__ import annotations

import torch


def box_lower(A, l, u):
    """min of Σ A·z over l ≤ z ≤ u (A of shape (B, S, *shape), l and u (B, *shape)): (B, S)."""
    return (A.clamp(min=0) * l.unsqueeze(1) + A.clamp(max=0) * u.unsqueeze(1)).flatten(2).sum(-1)


def check_ball(x, eps, clip) -> torch.Tensor:
    """ε as a (B, 1, 1, 1) tensor after checking x (finite (B, C, H, W) pixels inside the clip box)
    and ε (a number or one per sample, finite, ≥ 0); else one ValueError that says what is wrong."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor of pixels, got {type(x).__name__} "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite pixels; bounds need finite images in pixel units")
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.dim() > 1 or (eps_t.dim() == 1 and eps_t.numel() != x.shape[0]):
        raise ValueError(f"eps must be a number or a ({x.shape[0]},) tensor (one per sample), got shape "
                         f"{tuple(eps_t.shape)}")
    if not bool(torch.isfinite(eps_t).all()) or bool((eps_t < 0).any()):
        raise ValueError(f"eps must be finite and ≥ 0 (a radius in pixel units), got {eps}")
    if clip is not None:
        lo, hi = float(x.min()), float(x.max())
        if lo < clip[0] or hi > clip[1]:
            raise ValueError(f"x has pixels in [{lo:.4g}, {hi:.4g}], outside the clip box {tuple(clip)}: the ball would "
                             "not contain x. Pass images in pixel units [0, 1] (normalisation is the model's first "
                             "layer), or clip=None to bound the unclipped ball")
    return eps_t.expand(x.shape[0]).reshape(-1, 1, 1, 1)


class Ball:
    """The ball around x (B, C, H, W) of radii ``eps`` (B, 1, 1, 1) in ``norm`` ("inf" or 2),
    intersected with the ``clip`` box (low, high) unless it is None. ``box``: its enclosing box."""

    def __init__(self, x: torch.Tensor, eps: torch.Tensor, norm, clip):
        self.x, self.eps, self.norm, self.clip = x, eps, norm, clip
        self.box = self.enclosing_box(eps)

    def enclosing_box(self, eps):
        """(lo, hi): the box [x − ε, x + ε] ∩ the clip box, which contains the ball of radius ε."""
        lo, hi = self.x - eps, self.x + eps
        if self.clip is not None:
            lo, hi = lo.clamp(min=self.clip[0]), hi.clamp(max=self.clip[1])
        return lo, hi

    def concretize(self, A, eps=None) -> torch.Tensor:
        """min of Σ A·x' over the ball of radius ``eps`` (B,) (default: the ball's ε) ∩ the clip box."""
        eps = self.eps if eps is None else eps.view(-1, 1, 1, 1)
        box = box_lower(A, *self.enclosing_box(eps))
        if self.norm == "inf":
            return box
        lower = (A * self.x.unsqueeze(1)).flatten(2).sum(-1) - eps.view(-1, 1) * A.flatten(2).norm(dim=-1)
        return lower if self.clip is None else torch.maximum(lower, box)

    def certified_below(self, coef, offset, threshold: float = 0.0, iters: int = 40) -> torch.Tensor:
        """(B,) the largest ε' ≤ ε (per sample) with  min_s β_s + min_{‖x'−x‖≤ε'} Λ_s·x' > threshold,
        by bisection on the concretisation alone: relaxations built for the ε-ball stay sound on
        every smaller ball, so one backward pass certifies a whole range of radii."""
        eps = self.eps.view(-1)

        def ok(e):
            return (offset + self.concretize(coef, e)).amin(1) > threshold

        lo, hi = torch.zeros_like(eps), eps.clone()
        top = ok(hi)
        for _ in range(iters):
            mid = (lo + hi) / 2
            good = ok(mid)
            lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
        return torch.where(top, eps, lo)
