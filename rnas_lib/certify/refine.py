"""Intermediate bounds of full CROWN: the bounds that relax every ReLU / max pool, refined node
by node with backward passes for the neurons whose relaxation is undecided.

Cost ∝ number of undecided neurons × depth; stable neurons are relaxed exactly whatever their
bounds, so only unstable ReLU inputs and the candidates of undominated max-pool windows with a
unique maximum at x are refined.
"""
from __future__ import annotations

import math

import torch

from .backward import backward
from .forward import concretize_linear, forward_mode_images, input_linear, linear_step, tighter_linear
from .state import BoundState

#: bytes that one chunk of intermediate CROWN rows may use per live coefficient tensor
ROW_BUDGET = 256 * 2**20


def crown_intermediate(state: BoundState, refine: bool = True, forward: bool | None = None) -> None:
    """``state.pre``: bounds on the input z of every ReLU / max pool, in topological order, as the tightest of
    1. the interval from the layers bounded so far (``state.interval``);
    2. forward-mode linear bounds (``forward``), used when ``forward`` is True or (None) when the
       batch fits in FORWARD_MEMORY (``forward_mode_images``);
    3. (``refine``) backward CROWN passes for the neurons whose relaxation is still undecided
       (``undecided``). The linear functions of a backward pass replace the forward ones where
       they bound tighter, so later layers inherit them.
    """
    g = state.g
    if not state.consumers:
        return
    last = max(state.consumers)
    last_use = {k: i for i in range(1, last + 1) for k in g.inputs[i]}
    if forward is None:
        forward = len(state.ball.x) <= forward_mode_images(g)
    lin = {0: input_linear(state.ball)} if forward else {}
    for j in range(1, last + 1):
        if forward:
            lin[j] = linear_step(state, j, lin)
            for k in set(g.inputs[j]):
                if last_use.get(k) == j:
                    del lin[k]
        if j in state.consumers:
            l, u = state.interval(j)
            if forward:
                lf, uf = concretize_linear(state.ball, lin[j])
                l, u = torch.maximum(l, lf), torch.minimum(u, uf)
            need = undecided(state, j, l, u)
            if refine and bool(need.any()):
                cl, cu, back = crown_bounds(state, j, need, linear=forward)
                if forward:
                    lin[j] = tighter_linear(lin[j], back, need & (cl > l), need & (cu < u))
                l, u = torch.where(need, torch.maximum(l, cl), l), torch.where(need, torch.minimum(u, cu), u)
            state.pre[j] = (l, u)
        if forward and last_use.get(j) is None:
            del lin[j]


def undecided(state: BoundState, z: int, l, u) -> torch.Tensor:
    """The neurons of node z whose relaxation [l, u] leaves open and a tighter bound could close
    (each consumer's ``undecided``). No bound is tighter than the clean value v, so a ReLU input
    with v = 0 or a max-pool window whose maximum is tied at x (MNIST's constant background) stays
    open whatever is spent on it, and is not refined."""
    need = torch.zeros_like(l, dtype=torch.bool)
    v = state.g.values[z].detach()
    for i in state.consumers[z]:
        need |= state.g.ops[i].undecided(l, u, v)
    return need


def crown_bounds(state: BoundState, z: int, need: torch.Tensor, linear: bool = False) -> tuple:
    """(l, u, linear): CROWN bounds on node z where ``need`` (B, *shape) is set (∓inf
    elsewhere), and (with ``linear``, else None) their linear functions (Λ̲, β̲, Λ̄, β̄), Λ
    (B, N, n) and β (B, N), zero elsewhere. One backward pass per chunk of rows ±e_i, each
    image's rows padded to the largest count in the batch."""
    x = state.ball.x
    B, shape = need.shape[0], need.shape[1:]
    N, n = math.prod(shape), x[0].numel()
    flat = need.reshape(B, N)
    counts = flat.sum(1)
    S = int(counts.max())
    order = torch.argsort((~flat).to(torch.uint8), dim=1, stable=True)[:, :S]  # needed neurons first
    valid = torch.arange(S, device=need.device) < counts[:, None]
    widest = max(math.prod(state.g.shape(i)) for i in range(z + 1))
    chunk = max(1, ROW_BUDGET // (2 * B * widest * x.element_size()))
    dt, dev = x.dtype, x.device
    low, up = torch.full((B, N), -math.inf, dtype=dt, device=dev), torch.full((B, N), math.inf, dtype=dt, device=dev)
    if linear:
        lowL, upL = torch.zeros(B, N, n, dtype=dt, device=dev), torch.zeros(B, N, n, dtype=dt, device=dev)
        lowb, upb = torch.zeros(B, N, dtype=dt, device=dev), torch.zeros(B, N, dtype=dt, device=dev)
    for start in range(0, S, chunk):
        idx, ok = order[:, start : start + chunk], valid[:, start : start + chunk]
        s = idx.shape[1]
        rows = torch.zeros(B, s, N, dtype=dt, device=dev)
        rows.scatter_(2, idx.unsqueeze(2), ok.unsqueeze(2).to(dt))
        coef, offset = backward(state, z, torch.cat([rows, -rows], 1).view(B, 2 * s, *shape))
        lb = offset + state.ball.concretize(coef)
        low = low.scatter(1, idx, torch.where(ok, lb[:, :s], -math.inf))
        up = up.scatter(1, idx, torch.where(ok, -lb[:, s:], math.inf))
        if linear:
            coef = coef.reshape(B, 2 * s, n) * torch.cat([ok, ok], 1).unsqueeze(2)
            rows_idx = idx.unsqueeze(2).expand(B, s, n)
            lowL, upL = lowL.scatter(1, rows_idx, coef[:, :s]), upL.scatter(1, rows_idx, -coef[:, s:])
            lowb, upb = lowb.scatter(1, idx, offset[:, :s]), upb.scatter(1, idx, -offset[:, s:])
    return low.view(B, *shape), up.view(B, *shape), (lowL, lowb, upL, upb) if linear else None
