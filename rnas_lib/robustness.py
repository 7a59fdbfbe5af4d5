"""Robustness terms R(model, x, y) that a robust search maximises (larger = more robust).

A search method ``m`` with a term minimises, at the architecture level,
    L_α = CE(f(x_val), y_val) − γ · R(f, x_val, y_val)
(and, if asked, L_w = CE(f(x_train), y_train) − γ_w · R(f, x_train, y_train) at the weight level).
``TERMS`` maps a method name to a factory: ``TERMS[m](**options)`` returns the callable R; a
factory's ``default_gamma`` (if set) is the γ a search uses when none is given. A term that draws
random numbers owns a ``torch.Generator`` as its ``generator`` attribute; a search seeds it from
its seed and saves its state in every checkpoint, so that a resumed search draws what an
uninterrupted one would.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

RobustnessTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: method name → factory(**options) → R(model, x, y) (a differentiable scalar)
TERMS: dict[str, Callable[..., RobustnessTerm]] = {}


# --------------------------------------------------------------------------- CB: certified lower bound
SQUASHES = ("normalized", "tanh")
STATISTICS = ("bounded", "batch")


def dsrna_cb(eps: float = 0.01, norm="inf", method: str = "crown-ibp", samples: int | None = 8,
             squash: str = "normalized", scale: float = 1.0, statistics: str = "bounded") -> RobustnessTerm:
    """R_CB(f, x, y) = mean_b φ(m_b), m_b ≤ min_{t≠y_b} f_{y_b}(x') − f_t(x') the certified margin
    lower bound of ``rnas_lib.bounds.margin_lower_bound`` over the ε-ball (ℓ``norm``, pixel units,
    clipped to [0, 1]) for the first ``samples`` images of the batch (all if None), and φ bounded:

    ``"normalized"`` (default)  φ(m) = m / (s + |m|),  s = τ + sg(mean_b |m_b|),  τ = ``scale``
        (sg: no gradient through s). φ ∈ (−1, 1) and ∂R/∂m ≈ 1/(4s): on an untrained supernet
        CROWN-IBP margins are around −1e10 (the IBP intermediate intervals grow several-fold per
        layer), so a fixed squash would be flat there; this one follows the relative change of the
        bound, like −¼·log|m|, and becomes the softsign m/(τ + |m|) once bounds are of order τ.
    ``"tanh"``  φ(m) = tanh(m / τ): the textbook bounded choice, flat (zero gradient) whenever the
        bounds are far below −τ, i.e. until the weights are trained for certification.

    BatchNorm in train mode (the search) normalises with batch statistics; ``statistics`` says whose:
    ``"bounded"`` (default) those of the bounded images, so only they are traced; ``"batch"`` those
    of the whole batch, as in the forward pass that the CE sees — the whole batch is traced, and
    ``R.with_logits(model, x, y)`` returns that pass's logits with R. The bound's cost grows with
    the number of traced and bounded images: benchmarks/bench_bounds.py times both; notebook 03
    measures that their α-gradients point the same way (cosine ≈ 0.98–0.99).
    Defaults: ε = 0.01 ℓ∞, the scale at which standard-trained digits/MNIST networks are
    certifiable at all (notebook 08); "crown-ibp", the certified-training choice (full CROWN costs a
    backward pass per intermediate neuron); 8 images, whose gradient matches the whole batch's.
    """
    from .attacks import check_norm
    from .bounds import METHODS, margin_lower_bound, trace

    check_norm(norm)
    if method not in METHODS:
        raise ValueError(f"unknown bound method {method!r}; allowed: {', '.join(METHODS)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (the radius of the threat ball in pixel units), got {eps!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ValueError(f"samples must be a positive integer (how many images of the batch to bound) or None "
                         f"(all), got {samples!r}")
    if squash not in SQUASHES:
        raise ValueError(f"unknown squash {squash!r}; allowed: {', '.join(SQUASHES)}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0 (τ, in logit units), got {scale!r}")
    if statistics not in STATISTICS:
        raise ValueError(f"unknown statistics {statistics!r}; allowed: {', '.join(STATISTICS)}")

    def phi(m):
        if squash == "tanh":
            return torch.tanh(m / scale)
        s = scale + m.detach().abs().mean()
        return m / (s + m.abs())

    def bounded(x):
        return len(x) if samples is None else min(samples, len(x))

    if statistics == "bounded":
        def robustness(model, x, y):
            n = bounded(x)
            return phi(margin_lower_bound(model, x[:n], y[:n], eps, norm, method)).mean()

        return robustness

    def with_logits(model, x, y):
        """(logits, R) from one traced forward pass over the whole batch."""
        g = trace(model, x)
        n = bounded(x)
        m = margin_lower_bound(model, x[:n], y[:n], eps, norm, method, graph=g.head(n))
        return g.values[g.output], phi(m).mean()

    def robustness(model, x, y):
        return with_logits(model, x, y)[1]

    robustness.with_logits = with_logits
    return robustness


#: ‖∇_α R_CB‖ ≈ 0.5 against ‖∇_α CE‖ ≈ 0.07–0.1 on the smoke supernet (notebook 03): γ = 0.1 gives R
#: a push of about half to two thirds of the CE's, where DARTS' γ-free search has only the CE.
dsrna_cb.default_gamma = 0.1


# --------------------------------------------------------------------------- JB: Jacobian norm bound
def dsrna_jb(eps: float = 0.1, norm="inf", mode: str = "projection", n_proj: int = 1) -> RobustnessTerm:
    """R_J(f, x, y) = −mean_x b(x), b the first-order output-change bound of
    ``rnas_lib.jacobian.first_order_bound`` over the ε-ball (ℓ``norm``, pixel units).

    Defaults (rnas's choices): ``mode="projection"`` with one projection, the unbiased Hoffman et al.
    estimate of ‖J‖_F² at the price of one extra (double-differentiated) backward pass; with
    ``with_logits`` sharing the forward pass with the search's CE, a DSRNA-JB search step is timed
    against a DARTS step by benchmarks/bench_jacobian.py (target ≤ 2×). ``"exact"`` (Σ_k ‖J_k‖_q,
    C backward passes) and ``"top_logit"`` (the public code's form, docs/paper.md, letter C) are the
    alternatives. ε = 0.1 in ℓ∞ is a digits/MNIST scale; R_J is linear in ε, so ε only rescales γ.
    The square root of the projection estimate is a slightly low (Jensen) but smooth estimate of
    ‖J‖_F. ``R.with_logits(model, x, y)`` returns the logits of R's forward pass with R, so that
    the search's CE needs no forward of its own.
    """
    from .jacobian import MODES, dual_norm, first_order_bound

    dual_norm(norm)
    if mode not in MODES:
        raise ValueError(f"unknown Jacobian mode {mode!r}; allowed: {', '.join(MODES)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (the radius of the threat ball in pixel units), got {eps!r}")
    if mode == "projection" and (isinstance(n_proj, bool) or not isinstance(n_proj, int) or n_proj < 1):
        raise ValueError(f"n_proj must be a positive integer, got {n_proj!r}")

    generator = torch.Generator()  # the projections' own random stream (a search seeds it and saves its state)

    def robustness(model, x, y):
        return -first_order_bound(model, x, eps, norm, mode, n_proj, generator=generator).mean()

    def with_logits(model, x, y):
        """(logits, R) from one forward pass, which stands in for the model's own forward."""
        bound, logits = first_order_bound(model, x, eps, norm, mode, n_proj, generator=generator, return_logits=True)
        return logits, -bound.mean()

    robustness.with_logits = with_logits
    robustness.generator = generator
    return robustness


def dsrna_combined(eps: float = 0.1, norm="inf", w_cb: float = 1.0, w_jb: float = 1.0, mode: str = "projection",
                   n_proj: int = 1, cb_options: dict | None = None) -> RobustnessTerm:
    """R = w_cb·R_CB + w_jb·R_J (DSRNA-Combined, docs/paper.md, letter B: R_CB + R_J): R_CB is
    ``TERMS["dsrna_cb"](eps=eps, norm=norm, **cb_options)`` (looked up when R is first called), R_J is
    ``dsrna_jb(eps, norm, mode, n_proj)``."""
    for name, w in (("w_cb", w_cb), ("w_jb", w_jb)):
        if not w >= 0:
            raise ValueError(f"{name} must be ≥ 0, got {w!r}")
    r_jb = dsrna_jb(eps, norm, mode, n_proj)
    r_cb = None

    def certified(model, x, y):
        nonlocal r_cb
        if r_cb is None:
            if "dsrna_cb" not in TERMS:
                raise ValueError("dsrna_combined needs the certified-bound term TERMS['dsrna_cb'] (rnas_lib.robustness), "
                                 "which is not registered; use method 'dsrna_jb' or register 'dsrna_cb' first")
            r_cb = TERMS["dsrna_cb"](eps=eps, norm=norm, **(cb_options or {}))
        return r_cb(model, x, y)

    def robustness(model, x, y):
        return w_cb * certified(model, x, y) + w_jb * r_jb(model, x, y)

    def with_logits(model, x, y):
        """(logits, R), the logits from R_J's forward pass."""
        logits, r_j = r_jb.with_logits(model, x, y)
        return logits, w_cb * certified(model, x, y) + w_jb * r_j

    robustness.with_logits = with_logits
    robustness.generator = r_jb.generator
    return robustness


TERMS["dsrna_cb"] = dsrna_cb
TERMS["dsrna_jb"] = dsrna_jb
TERMS["dsrna_combined"] = dsrna_combined
