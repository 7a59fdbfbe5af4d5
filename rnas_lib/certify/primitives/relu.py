"""ReLU: the triangle relaxation and every rule that uses it.

With pre-activation bounds [l, u]:
    l ≥ 0: relu(z) = z;   u ≤ 0: relu(z) = 0;
    else   a_l·z ≤ relu(z) ≤ u/(u−l)·(z − l)  with  a_l = 1[u > −l] (CROWN-adaptive, default)
           or a_l = u/(u−l) (Fast-Lin);
in a backward pass positive coefficients take the lower line, negative ones the upper line. Every
a_l ∈ [0, 1] is sound (α-CROWN optimises it per specification row).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Nonlinear, crop

RELU_SLOPES = ("adaptive", "fast-lin")


def relu_relaxation(l: torch.Tensor, u: torch.Tensor, slope: str = "adaptive"):
    """Per neuron with input in [l, u]: (a_l, a_u, b_u) such that  a_l·z ≤ relu(z) ≤ a_u·z + b_u  on
    [l, u] (the triangle relaxation): (1, 1, 0) if l ≥ 0, (0, 0, 0) if u ≤ 0, else
    a_u = u/(u − l), b_u = −a_u·l and a_l = 1[u > −l] (``"adaptive"``, CROWN) or a_u (``"fast-lin"``)."""
    if slope not in RELU_SLOPES:
        raise ValueError(f"unknown relu_slope {slope!r}; allowed: {', '.join(RELU_SLOPES)}")
    active, unstable = l >= 0, (l < 0) & (u > 0)
    width = torch.where(unstable, u - l, torch.ones_like(u))
    su = torch.where(unstable, u / width, active.to(u.dtype))
    bu = torch.where(unstable, -su * l, torch.zeros_like(u))
    if slope == "adaptive":
        sl = torch.where(unstable, (u > -l).to(u.dtype), active.to(u.dtype))
    else:
        sl = su
    return sl, su, bu


class ReLU(Nonlinear):
    """relu(z), relaxed by (a_l, a_u, b_u) of shape (B, 1, *shape) (``relaxation``)."""

    def forward(self, z):
        return F.relu(z)

    def interval(self, l, u):
        """relu is monotone: it maps interval ends to interval ends."""
        return self.forward(l), self.forward(u)

    def relaxation(self, l, u, relu_slope: str = "adaptive"):
        """(a_l, a_u, b_u) of ``relu_relaxation``, each with a row axis: (B, 1, *shape)."""
        return tuple(t.unsqueeze(1) for t in relu_relaxation(l, u, relu_slope))

    def backward(self, A, relax):
        """(Λ_z, Λ⁻·b_u) through ReLU: Λ_z = Λ⁺·a_l + Λ⁻·a_u per neuron. Stable neurons have a_l = a_u
        and b_u = 0, so for one image with few unstable neurons (full CROWN's rows) Λ_z = Λ·a_u on the
        whole tensor and the sign only matters on the unstable columns: one pass over Λ instead of five.
        (Batches keep the dense rule, whose rounding does not depend on the other images.)"""
        sl, su, bu = relax
        B, S = A.shape[:2]
        a = A.reshape(B, S, -1)
        sl_f, su_f, bu_f = (t.reshape(t.shape[0], t.shape[1], -1) for t in (sl, su, bu))
        idx = ((sl_f != su_f) | (bu_f != 0)).flatten(0, 1).any(0).nonzero().squeeze(1) if B == 1 else None
        if idx is None or 4 * len(idx) > a.shape[2]:
            return A * torch.where(A >= 0, sl, su), (A.clamp(max=0) * bu).flatten(2).sum(-1)
        ai = a[..., idx]
        sli, sui, bui = (t[..., idx] for t in (sl_f, su_f, bu_f))
        out = (a * su_f).index_copy_(2, idx, ai * torch.where(ai >= 0, sli, sui))  # a fresh tensor
        return out.view_as(A), (ai.clamp(max=0) * bui).sum(-1)

    def local_backward(self, A, relax, at):
        """``backward`` of a crop of Λ at ``at``: the relaxation is per neuron, so the window stays."""
        return (*self.backward(A, tuple(crop(t, at, A.shape[-2:]) for t in relax)), at)

    def forward_linear(self, lowL, upL, lowb, upb, relax, n: int, shape):
        """Forward-mode linear bounds through the relaxation: lower·a_l, upper·a_u + b_u (Λ as
        (B·n, *shape), one row per input pixel; β as (B, *shape))."""
        sl, su, bu = (t.squeeze(1) for t in relax)
        rep = lambda t: t.repeat_interleave(n, 0)  # noqa: E731 (per image → per row)
        return lowL * rep(sl), upL * rep(su), lowb * sl, upb * su + bu

    def undecided(self, l, u, v) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, up): the inputs whose lower / upper bound, made tighter, could decide the relaxation:
        both ends of the unstable inputs (l < 0 < u) that are not 0 at the clean point v (no bound
        is tighter than v, so there a tighter bound could not decide it)."""
        unstable = (l < 0) & (u > 0) & (v != 0)
        return unstable, unstable

    @staticmethod
    def optimizable(relax) -> torch.Tensor:
        """The neurons whose lower slope a_l is free in [0, 1] (unstable: 0 < a_u < 1)."""
        su = relax[1]
        return (su > 0) & (su < 1)

    @staticmethod
    def with_lower_slopes(relax, slopes, where):
        """The relaxation with a_l replaced by ``slopes`` where ``where`` is set."""
        sl, su, bu = relax
        return torch.where(where, slopes, sl), su, bu
