"""The backward (CROWN) pass: a linear lower bound of Σ Λ·node over the ball, to the input.

A lower bound  c·f(x') ≥ Λ·x' + β  is built node by node in reverse topological order. Through an
affine node y = L(z) + b:  Λ_z += Λ_y·L (the transpose of L), β += Λ_y·b; through ReLU and max
pool by their relaxations (``primitives.relu``, ``primitives.maxpool``). Specification rows are
folded into the batch: Λ has shape (B, S, *node shape). Everything is plain differentiable torch.
"""
from __future__ import annotations

import torch

from .ball import box_lower
from .state import BoundState


def backward(state: BoundState, start: int, A: torch.Tensor, stop_at_nonlinear: bool = False):
    """Σ A·node_start ≥ Λ·x' + β over the ball: returns (Λ, β), Λ of shape (B, S, *input shape)
    (None when no path reaches the input) and β (B, S). With ``stop_at_nonlinear`` the pass
    stops at every ReLU / max pool and concretises there on its (refined) interval (IBP)."""
    g = state.g
    acc = {start: A}
    offset = A.new_zeros(A.shape[:2])
    coef = None
    for i in range(start, -1, -1):
        A = acc.pop(i, None)
        if A is None:
            continue
        A = A.contiguous()
        op = g.ops[i]
        if i == 0:
            coef = A
            continue
        if op.nonlinear:
            if stop_at_nonlinear:
                offset = offset + box_lower(A, *state.interval(i))
                continue
            A_in, b = op.backward(A, state.relaxation(i))
            offset = offset + b
            As = [A_in]
        else:
            b = op.bias_term(A)
            if b is not None:
                offset = offset + b
            As = op.transpose(A, [g.shape(j) for j in g.inputs[i]])
        for j, a in zip(g.inputs[i], As):
            acc[j] = a if j not in acc else acc[j] + a
    return coef, offset


def lower(state: BoundState, start: int, A: torch.Tensor, stop_at_nonlinear: bool = False) -> torch.Tensor:
    """Lower bound (B, S) of Σ A·node_start over the ball, A of shape (B, S, *shape)."""
    coef, offset = backward(state, start, A, stop_at_nonlinear)
    return offset if coef is None else offset + state.ball.concretize(coef)
