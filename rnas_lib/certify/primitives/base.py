"""What every traced node is: an affine map y = L(z₁, …, z_k) + b, or one of the two nonlinear
primitives (ReLU, max pool), which bring their own relaxation rules (``relu``, ``maxpool``).

Linear coefficients Λ carry the specification rows folded into the batch: shape (B, S, *node shape).
"""
from __future__ import annotations

import torch


def pair(v) -> tuple[int, int]:
    """An int or a pair as a pair (PyTorch's kernel, stride and padding arguments)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def rows(A: torch.Tensor) -> torch.Tensor:
    """(B, S, *shape) → (B·S, *shape)."""
    return A.reshape(A.shape[0] * A.shape[1], *A.shape[2:])


def unrows(a: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """(B·S, *shape') → (B, S, *shape'), B and S those of A."""
    return a.view(A.shape[0], A.shape[1], *a.shape[1:])


class Affine:
    """y = L(z₁, …, z_k) + b.

    interval:        y ∈ L(mid) + b ± |L|·rad  (``forward`` on the centres, ``abs_linear`` on the radii)
    forward-linear:  Λ_y = L·Λ_z (``linear``, no bias), centre and radius as for intervals
    backward-linear: Λ_z = Λ_y·L (``transpose`` maps Λ_y to (Λ_{z₁}, …)), β += Λ_y·b (``bias_term``,
                     shape (B, S), or None without a bias).
    """

    nonlinear = False

    def linear(self, *zs):
        return self.forward(*zs)

    def abs_linear(self, *rads):
        raise NotImplementedError

    def bias_term(self, A):
        return None


class Nonlinear:
    """A node that is not affine: bounded through a relaxation built from bounds on its input.

    interval(l, u):               the node's interval from its input's
    relaxation(l, u, relu_slope): the linear lower and upper functions it is relaxed by on [l, u]
    backward(A, relax):           (Λ_z, Λ·offset) of a backward pass through the relaxation
    forward_linear(...):          forward-mode linear bounds through the relaxation
    undecided(l, u, v):           (low, up): input neurons whose relaxation [l, u] leaves open and
                                  a tighter lower / upper bound could close (v: the clean input)
    """

    nonlinear = True


class Const(Affine):
    """A constant (the ``none`` op: zeros)."""

    def __init__(self, value):
        self.value = value

    def forward(self):
        return self.value

    def abs_linear(self):
        return torch.zeros_like(self.value)

    def transpose(self, A, in_shapes):
        return []

    def bias_term(self, A):
        return (A * self.value.unsqueeze(1)).flatten(2).sum(-1)
