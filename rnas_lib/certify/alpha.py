"""α-CROWN: the lower ReLU slopes of the final backward pass optimised per specification row
(Xu et al. 2021). Every slope a_l ∈ [0, 1] gives a sound bound, so projected Adam on the bound
may move them freely; the best bound of each row over the steps is kept."""
from __future__ import annotations

import torch

from .backward import backward
from .primitives import ReLU
from .state import BoundState


def optimized_lower(state: BoundState, start: int, A: torch.Tensor, steps: int = 20, lr: float = 0.1):
    """(lower (B, S), Λ, β) with the lower slope a_l ∈ [0, 1] of every unstable ReLU chosen per
    specification row by ``steps`` Adam steps on the bound; the best bound of each row over the
    steps is kept (with its Λ, β). No gradient flows to the model."""
    g = state.g
    B, S = A.shape[:2]
    A = A.detach()
    relus = [i for i, op in enumerate(g.ops[: start + 1]) if isinstance(op, ReLU)]
    saved = {i: state.relaxation(i) for i in relus}
    slopes, free = {}, {}
    for i in relus:
        relax = tuple(t.detach() for t in saved[i])
        free[i] = ReLU.optimizable(relax)
        slopes[i] = relax[0].expand(B, S, *relax[0].shape[2:]).clone().requires_grad_(True)
    best = coef_best = off_best = None
    opt = torch.optim.Adam(list(slopes.values()), lr=lr, maximize=True) if relus else None
    try:
        for step in range(steps + 1):
            with torch.enable_grad():
                for i in relus:
                    state.relax[i] = ReLU.with_lower_slopes(tuple(t.detach() for t in saved[i]), slopes[i], free[i])
                coef, offset = backward(state, start, A)
                lb = offset if coef is None else offset + state.ball.concretize(coef)
                grads = torch.autograd.grad(lb.sum(), list(slopes.values())) if step < steps and relus else None
            if best is None:
                best, off_best = lb.detach(), offset.detach()
                coef_best = None if coef is None else coef.detach()
            else:
                better = lb.detach() > best
                best = torch.where(better, lb.detach(), best)
                if coef is not None:
                    coef_best = torch.where(better.view(B, S, *[1] * (coef.dim() - 2)), coef.detach(), coef_best)
                off_best = torch.where(better, offset.detach(), off_best)
            if grads is None:
                break
            for p, gr in zip(slopes.values(), grads):
                p.grad = gr
            opt.step()
            with torch.no_grad():
                for p in slopes.values():
                    p.clamp_(0.0, 1.0)
    finally:
        state.relax.update(saved)
    return best, coef_best, off_best
