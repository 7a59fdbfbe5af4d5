"""Max pool: its relaxation and every rule that uses it.

Over a window W with input bounds [l_i, u_i]: let j be an input of largest l_i (ties: below); then
    z_j ≤ max_i z_i ≤ z_j + max(0, max_{i≠j} u_i − l_j)
(sound: if the max is some z_k, k ≠ j, then z_k ≤ u_k ≤ l_j + c ≤ z_j + c, for any j), exact when
z_j dominates the window. Both lines have slope 1 on z_j, so only the offset depends on the sign.
Inputs whose bounds are equal in exact arithmetic (a constant background) come out of the bounding
passes a few ulps apart, by an amount that depends on how the rows were chunked; so j is the input of
largest l, then of largest u, among those within round-off (``TIE_ULPS``) of the window's largest,
then the first, and the relaxation does not depend on the chunking.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Nonlinear, crop, pair


#: bounds within this many machine epsilons (relative to 1 + |the window's largest|) of it count as equal
TIE_ULPS = 64


def window_choice(lw: torch.Tensor, uw: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, L): per window (inputs on axis 2) the input j of ``MaxPool``: the largest lower bound,
    then the largest upper bound, each up to round-off, then the first."""
    tol = TIE_ULPS * torch.finfo(lw.dtype).eps

    def near_max(t, among):
        t = torch.where(among, t, -math.inf)
        top = t.amax(2, keepdim=True)
        return among & ((t == top) | (t >= top - tol * (1 + top.abs())))  # == for an infinite top

    best = near_max(uw, near_max(lw, torch.ones_like(lw, dtype=torch.bool)))
    return best.to(torch.uint8).argmax(2, keepdim=True)  # the first of the largest


def window_gap(lw: torch.Tensor, uw: torch.Tensor) -> tuple:
    """(j, l_j, max_{i≠j} u_i − l_j), each (B, C, 1, L): per window the input j (``window_choice``), its
    lower bound, and the upper line's offset before it is clamped at 0 (the window is open where it is > 0)."""
    j = window_choice(lw, uw)
    lj = lw.gather(2, j)
    return j, lj, uw.scatter(2, j, -math.inf).amax(2, keepdim=True) - lj


def gather_windows(t, idx):
    """(B, C, L): t (B, C, H, W) at the flat index idx (B, C, L) of each of the L windows."""
    return t.flatten(2).gather(2, idx).view(*t.shape[:2], -1)


class MaxPool(Nonlinear):
    """k×k max pool (no dilation, floor mode), relaxed by (flat index of j, offset c, input size)."""

    def __init__(self, kernel, stride, padding):
        self.k, self.s, self.p = pair(kernel), pair(stride), pair(padding)

    def forward(self, z):
        return F.max_pool2d(z, self.k, self.s, self.p)

    def interval(self, l, u):
        """max pool is monotone: it maps interval ends to interval ends."""
        return self.forward(l), self.forward(u)

    def windows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, k·k, L): the windows of t, padding as −inf."""
        B, C = t.shape[:2]
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        return F.unfold(F.pad(t, (pw, pw, ph, ph), value=-math.inf), (kh, kw), stride=(sh, sw)).view(B, C, kh * kw, -1)

    def relaxation(self, l, u, relu_slope: str | None = None):
        """For each window: flat input index of j (``window_choice``) (B, C, L), the offset c ≥ 0
        (B, 1, C, L) and the input's spatial size (``relu_slope`` is not used)."""
        B, C, H, W = l.shape
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        j, _, gap = window_gap(self.windows(l), self.windows(u))
        c = gap.squeeze(2).clamp(min=0)
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        j = j.squeeze(2)
        rows = (torch.arange(Ho, device=l.device) * sh - ph).repeat_interleave(Wo) + j // kw
        cols = (torch.arange(Wo, device=l.device) * sw - pw).repeat(Ho) + j % kw
        return rows * W + cols, c.unsqueeze(1), (H, W)

    def backward(self, A, relax):
        """(Λ_z, Λ⁻·c): Λ moves to the input j of each window, the upper line's offset c where Λ < 0."""
        idx, c, (H, W) = relax
        B, S, C = A.shape[:3]
        a = A.reshape(B, S, C, -1)
        A_in = a.new_zeros(B, S, C, H * W).scatter_add(3, idx.unsqueeze(1).expand(B, S, C, idx.shape[-1]), a)
        return A_in.view(B, S, C, H, W), (a.clamp(max=0) * c).flatten(2).sum(-1)

    def local_backward(self, A, relax, at):
        """``backward`` of a crop of Λ (B, S, C, h, w) at ``at``: its windows' inputs j, in the input
        window their kernels cover (from at·s − p, cut to the map)."""
        idx, c, (H, W) = relax
        B, S, C, h, w = A.shape
        Ho, Wo = (H + 2 * self.p[0] - self.k[0]) // self.s[0] + 1, (W + 2 * self.p[1] - self.k[1]) // self.s[1] + 1
        idx, c = (crop(t.reshape(*t.shape[:-1], Ho, Wo), at, (h, w)).flatten(-2) for t in (idx, c))
        top, left = (max(0, at[d] * self.s[d] - self.p[d]) for d in range(2))
        bottom = min(H, (at[0] + h - 1) * self.s[0] - self.p[0] + self.k[0])
        right = min(W, (at[1] + w - 1) * self.s[1] - self.p[1] + self.k[1])
        local_idx = (idx // W - top) * (right - left) + idx % W - left
        A_in, b = self.backward(A, (local_idx, c, (bottom - top, right - left)))
        return A_in, b, (None if (top, left, bottom, right) == (0, 0, H, W) else (top, left))

    def forward_linear(self, lowL, upL, lowb, upb, relax, n: int, shape):
        """Forward-mode linear bounds: max_i z_i ≥ z_j and ≤ z_j + c (Λ as (B·n, *shape_in), one
        row per input pixel; β as (B, *shape_in)); ``shape`` is the output's."""
        idx, c, _ = relax
        rows = idx.repeat_interleave(n, 0)
        lowL, upL = (gather_windows(t, rows).view(-1, *shape) for t in (lowL, upL))
        lowb = gather_windows(lowb, idx).view(-1, *shape)
        upb = (gather_windows(upb, idx) + c.squeeze(1)).view(-1, *shape)
        return lowL, upL, lowb, upb

    def undecided(self, l, u, v) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, up): in each window whose maximum no input is known to attain (max_{i≠j} u_i > l_j,
        j of ``window_choice``) but one input attains alone at the clean point v (so tighter bounds could
        decide it), the inputs that decide its relaxation: j and every i with u_i > l_j, at both
        ends. The offset c = max_{i≠j} u_i − l_j reads only l_j and the rivals' u_i, but forward
        mode carries j's upper line on, and the input's other consumers (skip, average pool, ReLU)
        use both ends of every input's bounds: refining one end only loosened the 28×28 margin
        bounds by half."""
        B, C, H, W = l.shape
        lw, uw = self.windows(l), self.windows(u)
        if lw.shape[2] < 2:  # 1×1 windows: the identity, nothing to decide
            none = torch.zeros_like(l, dtype=torch.bool)
            return none, none
        j, lj, gap = window_gap(lw, uw)
        top2 = self.windows(v).topk(2, dim=2).values
        open_ = (gap > 0) & (top2[:, :, :1] > top2[:, :, 1:])
        candidate = open_ & ((uw > lj) | (torch.arange(lw.shape[2], device=l.device).view(1, 1, -1, 1) == j))
        cover = F.fold(candidate.to(l.dtype).reshape(B, -1, lw.shape[3]), (H, W), self.k, padding=self.p, stride=self.s)
        return cover > 0, cover > 0
