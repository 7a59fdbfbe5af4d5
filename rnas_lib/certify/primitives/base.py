"""What every traced node is: an affine map y = L(z₁, …, z_k) + b, or one of the two nonlinear
primitives (ReLU, max pool), which bring their own relaxation rules (``relu``, ``maxpool``).

Linear coefficients Λ carry the specification rows folded into the batch: shape (B, S, *node shape).
"""
from __future__ import annotations

import torch


def pair(v) -> tuple[int, int]:
    """An int or a pair as a pair (PyTorch's kernel, stride and padding arguments)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def cut(A: torch.Tensor, origin: tuple[int, int], size) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """A crop A (…, h, w) whose top-left sits at ``origin`` (possibly outside the map) cut to the map
    of ``size`` (H, W): (the part inside, its top-left), the top-left None if it is the whole map."""
    (h, w), (H, W) = A.shape[-2:], size
    t0, l0 = max(0, -origin[0]), max(0, -origin[1])
    t1, l1 = min(h, H - origin[0]), min(w, W - origin[1])
    A = A[..., t0:t1, l0:l1]
    at = (origin[0] + t0, origin[1] + l0)
    return (A, None) if at == (0, 0) and A.shape[-2:] == (H, W) else (A, at)


def crop(t: torch.Tensor, at: tuple[int, int], hw) -> torch.Tensor:
    """t (…, H, W) at the window of size ``hw`` whose top-left is ``at``."""
    return t[..., at[0] : at[0] + hw[0], at[1] : at[1] + hw[1]]


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
    local:           how ``transpose`` acts on a crop of Λ_y whose top-left is ``at`` (``certify.local``):
                     "pointwise" maps (per pixel: channel maps, sums) keep the window, "spatial" ones map
                     it by ``local_transpose`` to [(crop of Λ_z, its top-left)]; None: the pass pads the
                     crop to the whole map first.
    """

    nonlinear = False
    local: str | None = None

    def local_bias_term(self, A, at):
        """``bias_term`` of a crop of Λ_y at ``at`` (a bias that is the same at every pixel)."""
        return self.bias_term(A)

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
    local_backward(A, relax, at): ``backward`` of a crop of Λ at ``at``: (crop of Λ_z, offset, its top-left)
    """

    nonlinear = True
    local = "spatial"


class Const(Affine):
    """A constant (the ``none`` op: zeros)."""

    local = "pointwise"

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

    def local_bias_term(self, A, at):
        return (A * crop(self.value, at, A.shape[-2:]).unsqueeze(1)).flatten(2).sum(-1)
