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
from .local import local_backward
from .forward import concretize_linear, forward_mode_images, input_linear, linear_step, tighter_linear
from .memory import ProbeMemory
from .state import BoundState

#: bytes that one chunk of intermediate CROWN rows may use per live coefficient tensor: a few MiB, so
#: that the chunk's coefficients stay in the processor's cache through the elementwise steps of the
#: backward pass, which are bound by memory traffic (benchmarks/bench_verify.py --row-budget)
ROW_BUDGET = 8 * 2**20
#: a chunk's rows are neurons of nearby pixels, in tiles of TILE × TILE pixels, so that their backward
#: pass carries only the window their receptive fields cover (``local.local_backward``)
TILE = 4
#: the least input pixels (H·W) for which rows are carried on their windows: on 8×8 digits the windows
#: cover the map within a layer or two, and cropping costs more than it saves
#: (benchmarks/bench_verify.py --local)
LOCAL_MIN_PIXELS = 256


def crown_intermediate(state: BoundState, refine: bool = True, forward: bool | None = None,
                       memory: ProbeMemory | None = None) -> dict[int, tuple]:
    """``state.pre``: bounds on the input z of every ReLU / max pool, in topological order, as the tightest of
    1. the interval from the layers bounded so far (``state.interval``);
    2. forward-mode linear bounds (``forward``), used when ``forward`` is True or (None) when the
       batch fits in FORWARD_MEMORY (``forward_mode_images``);
    3. the linear bounds a ``memory`` kept from a larger ball of the same image, where it holds;
    4. (``refine``) backward CROWN passes for the neurons whose relaxation is still undecided
       (``undecided``), except on nodes affine in the input, where forward mode is already exact
       (the backward pass would find the same linear function). The linear functions of a
       backward pass (or of the memory) replace the forward ones where they bound tighter, so
       later layers inherit them.
    Returns the linear functions of the backward passes per node (with a ``memory``, else {}).
    """
    g = state.g
    refined = {}
    if not state.consumers:
        return refined
    reading = memory is not None and memory.usable(state.ball)
    last = max(state.consumers)
    last_use = {k: i for i in range(1, last + 1) for k in g.inputs[i]}
    if forward is None:
        forward = len(state.ball.x) <= forward_mode_images(g)
    lin = {0: input_linear(state.ball)} if forward else {}
    affine = affine_in_input(g) if forward else set()
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
            kept = memory.bounds(j, state.ball, g.shape(j)) if reading else None
            if kept is not None:
                l, u, lin_j = tighter(l, u, kept, memory.rows[j], lin.get(j))
                if forward:
                    lin[j] = lin_j
            need_low, need_up = undecided(state, j, l, u)
            if refine and j not in affine and bool((need_low | need_up).any()):
                cl, cu, back = crown_bounds(state, j, need_low, need_up, linear=forward or memory is not None)
                if memory is not None:
                    refined[j] = back
                l, u, lin_j = tighter(l, u, (cl, cu), back, lin.get(j))
                if forward:
                    lin[j] = lin_j
            state.pre[j] = (l, u)
        if forward and last_use.get(j) is None:
            del lin[j]
    return refined


def affine_in_input(g) -> set[int]:
    """The nodes of graph g that no ReLU / max pool precedes: affine functions of the input."""
    affine = {0}
    for i in range(1, len(g.ops)):
        if not g.ops[i].nonlinear and all(k in affine for k in g.inputs[i]):
            affine.add(i)
    return affine


def tighter(l, u, other, back, lin):
    """(l, u, lin): the bounds [l, u] tightened by ``other`` = (l', u') where those are tighter, and
    the forward-mode linear bounds ``lin`` (None: not carried) with the functions ``back`` of those
    neurons in place of theirs."""
    ol, ou = other
    tighter_low, tighter_up = ol > l, ou < u
    if lin is not None:
        lin = tighter_linear(lin, back, tighter_low, tighter_up)
    return torch.where(tighter_low, ol, l), torch.where(tighter_up, ou, u), lin


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
    image's rows padded to the largest count in the batch; the rows of a chunk are neurons of nearby
    pixels (``row_order``), carried on the window they need (``unit_rows``)."""
    x = state.ball.x
    B, shape = need_low.shape[0], need_low.shape[1:]
    N = math.prod(shape)
    wanted = torch.cat([need_low.reshape(B, N), need_up.reshape(B, N)], 1)  # (B, 2N): lower, then upper
    counts = wanted.sum(1)
    S = int(counts.max())
    local = len(shape) == 3 and math.prod(x.shape[-2:]) >= LOCAL_MIN_PIXELS
    order = row_order(wanted, shape if local else (N,))[:, :S]
    valid = torch.arange(S, device=wanted.device) < counts[:, None]
    widest = max(math.prod(state.g.shape(i)) for i in range(z + 1))
    chunk = max(1, ROW_BUDGET // (B * widest * x.element_size()))
    dt, dev = x.dtype, x.device
    bound = torch.zeros((B, 2 * N), dtype=dt, device=dev)
    coefs, offsets = [], []
    for start in range(0, S, chunk):
        idx, ok = order[:, start : start + chunk], valid[:, start : start + chunk]
        sign = torch.where(idx < N, 1.0, -1.0).to(dt) * ok
        A, at = unit_rows(idx % N, ok, sign, shape, local)
        coef, offset = backward(state, z, A) if at is None else local_backward(state, z, A, at)
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


def row_order(wanted: torch.Tensor, shape) -> torch.Tensor:
    """(B, 2N): per image the rows (i < N: lower bound of neuron i, N + i: its upper bound), the
    ``wanted`` ones first; on (C, H, W) maps ordered by tile of TILE × TILE pixels, then pixel, then
    channel, then bound, so that consecutive rows share a receptive field."""
    N = math.prod(shape)
    r = torch.arange(2 * N, device=wanted.device)
    if len(shape) == 3:
        C, H, W = shape
        neuron = r % N
        h, w = neuron % (H * W) // W, neuron % W
        tile = (h // TILE) * -(-W // TILE) + w // TILE
        pixel = (tile * TILE + h % TILE) * TILE + w % TILE
        r = ((pixel * C + neuron // (H * W)) * 2 + r // N)
    key = r + (~wanted).long() * (int(r.max()) + 1)
    return torch.argsort(key, dim=1)


def unit_rows(neuron: torch.Tensor, ok: torch.Tensor, sign: torch.Tensor, shape, local: bool = True) -> tuple:
    """(A, at): the rows sign·e_neuron (B, R) (zero where not ``ok``) as coefficients on the node, A
    (B, R, *shape), or with ``local`` on (C, H, W) maps the crop (B, R, C, h, w) of the pixels the
    rows name, its top-left ``at`` (None: the whole map)."""
    B, R = neuron.shape
    if local and len(shape) == 3 and bool(ok.any()):
        C, H, W = shape
        h, w = neuron % (H * W) // W, neuron % W
        top, left = int(h[ok].min()), int(w[ok].min())
        hh, ww = int(h[ok].max()) + 1 - top, int(w[ok].max()) + 1 - left
        if (hh, ww) != (H, W):
            flat = torch.where(ok, neuron // (H * W) * hh * ww + (h - top) * ww + (w - left), 0)
            A = sign.new_zeros(B, R, C * hh * ww).scatter_(2, flat.unsqueeze(2), sign.unsqueeze(2))
            return A.view(B, R, C, hh, ww), (top, left)
    A = sign.new_zeros(B, R, math.prod(shape)).scatter_(2, neuron.unsqueeze(2), sign.unsqueeze(2))
    return A.view(B, R, *shape), None
