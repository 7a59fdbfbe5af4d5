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
            need_low, need_up = undecided(state, j, l, u)
            if refine and bool((need_low | need_up).any()):
                cl, cu, back = crown_bounds(state, j, need_low, need_up, linear=forward)
                tighter_low, tighter_up = cl > l, cu < u
                if forward:
                    lin[j] = tighter_linear(lin[j], back, tighter_low, tighter_up)
                l, u = torch.where(tighter_low, cl, l), torch.where(tighter_up, cu, u)
            state.pre[j] = (l, u)
        if forward and last_use.get(j) is None:
            del lin[j]


def undecided(state: BoundState, z: int, l, u) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, up): the neurons of node z whose lower / upper bound, made tighter, could close a
    relaxation that [l, u] leaves open (each consumer's ``undecided``). No
    bound is tighter than the clean value v, so a ReLU input with v = 0 or a max-pool window whose
    maximum is tied at x (MNIST's constant background) stays open whatever is spent on it, and is
    not refined."""
    low = torch.zeros_like(l, dtype=torch.bool)
    up = torch.zeros_like(low)
    v = state.g.values[z].detach()
    for i in state.consumers[z]:
        a, b = state.g.ops[i].undecided(l, u, v)
        low, up = low | a, up | b
    return low, up


def crown_bounds(state: BoundState, z: int, need_low: torch.Tensor, need_up: torch.Tensor,
                 linear: bool = False) -> tuple:
    """(l, u, linear): CROWN bounds on node z, the lower bound where ``need_low`` (B, *shape) is set
    and the upper where ``need_up`` is (−inf / +inf elsewhere), and (with ``linear``, else None)
    their linear functions as (rows, Λ, β): rows (B, S) name a lower bound of neuron i by i ∈ [0, N)
    and an upper bound by N + i (−1: padding), Λ (B, S, n), β (B, S). One backward pass per chunk
    of rows, +e_i for a lower bound (z_i ≥ Λ·x' + β) and −e_i for an upper one (−z_i ≥ …), each
    image's rows padded to the largest count in the batch."""
    x = state.ball.x
    B, shape = need_low.shape[0], need_low.shape[1:]
    N = math.prod(shape)
    wanted = torch.cat([need_low.reshape(B, N), need_up.reshape(B, N)], 1)  # (B, 2N): lower, then upper
    counts = wanted.sum(1)
    S = int(counts.max())
    order = torch.argsort((~wanted).to(torch.uint8), dim=1, stable=True)[:, :S]  # wanted rows first
    valid = torch.arange(S, device=wanted.device) < counts[:, None]
    widest = max(math.prod(state.g.shape(i)) for i in range(z + 1))
    chunk = max(1, ROW_BUDGET // (B * widest * x.element_size()))
    dt, dev = x.dtype, x.device
    bound = torch.zeros((B, 2 * N), dtype=dt, device=dev)
    coefs, offsets = [], []
    for start in range(0, S, chunk):
        idx, ok = order[:, start : start + chunk], valid[:, start : start + chunk]
        sign = torch.where(idx < N, 1.0, -1.0).to(dt) * ok
        A = torch.zeros(B, idx.shape[1], N, dtype=dt, device=dev)
        A.scatter_(2, (idx % N).unsqueeze(2), sign.unsqueeze(2))
        coef, offset = backward(state, z, A.view(B, -1, *shape))
        bound.scatter_(1, idx, sign * (offset + state.ball.concretize(coef)))  # ±(lower bound of ±z_i)
        if linear:
            coefs.append(sign.unsqueeze(2) * coef.reshape(B, idx.shape[1], -1))
            offsets.append(sign * offset)
    far = torch.cat([bound.new_full((B, N), -math.inf), bound.new_full((B, N), math.inf)], 1)
    bound = torch.where(wanted, bound, far)
    low, up = bound[:, :N].view(B, *shape), bound[:, N:].view(B, *shape)
    if not linear:
        return low, up, None
    return low, up, (torch.where(valid, order, -1), torch.cat(coefs, 1), torch.cat(offsets, 1))
