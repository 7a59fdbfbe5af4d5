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
OBJECTIVES = ("margin", "radius")
STATISTICS = ("bounded", "batch")


def dsrna_cb(eps: float = 0.01, norm="inf", method: str = "crown-ibp", samples: int | None = 8,
             squash: str = "normalized", scale: float = 1.0, statistics: str = "bounded",
             objective: str = "margin") -> RobustnessTerm:
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
    ``objective="radius"``: R_CB = mean_b ρ_b / ε instead, ρ_b the certified radius itself
    (``rnas_lib.bounds.implicit_radius``, the ε where m_b crosses 0, with its implicit-function
    gradient), in units of ε — CNN-Cert's "certified lower bound" as the paper names its metric,
    at the cost of a bisection (about 16 bounds without gradient) per step; ``eps`` only scales it.
    Defaults: ε = 0.01 ℓ∞, the order of the ℓ∞ radii certified on searched digit cells (notebook 05);
    on an untrained supernet the gradient's direction barely depends on it (notebook 03 compares
    ε/10 and 10ε); "crown-ibp", the certified-training choice, one backward pass (crown-forward and
    crown refine every intermediate layer, at a cost that grows with the input pixels or with the
    undecided neurons); 8 images, whose gradient matches the whole batch's.
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
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if objective == "radius" and statistics != "bounded":
        raise ValueError("objective='radius' bounds the bounded images with their own statistics; "
                         "use statistics='bounded'")

    def phi(m):
        if squash == "tanh":
            return torch.tanh(m / scale)
        s = scale + m.detach().abs().mean()
        return m / (s + m.abs())

    def bounded(x):
        return len(x) if samples is None else min(samples, len(x))

    if objective == "radius":
        from .bounds import implicit_radius

        def radius(model, x, y):
            n = bounded(x)
            return implicit_radius(model, x[:n], y[:n], norm, method, eps_max=100 * eps).mean() / eps

        return radius

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
    C backward passes) and ``"top_logit"`` (the public code's form, docs/paper.md letter C) are the
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


dsrna_jb.default_gamma = 0.01


def dsrna_combined(norm="inf", w_cb: float | None = None, w_jb: float | None = None, cb_options: dict | None = None,
                   jb_options: dict | None = None) -> RobustnessTerm:
    """R = w_cb·R_CB + w_jb·R_J (DSRNA-Combined, docs/paper.md letter B: R_CB + R_J), searched with
    γ = 1 (``default_gamma``), so that L_α = CE − w_cb·R_CB − w_jb·R_J.

    By default each part keeps what it has in its own search: R_CB = ``TERMS["dsrna_cb"](norm=norm,
    **cb_options)`` (ε₀ = 0.01) with w_cb = its ``default_gamma`` (0.1), R_J = ``dsrna_jb(norm=norm,
    **jb_options)`` (ε = 0.1) with w_jb = its ``default_gamma`` (0.01): the Combined objective is the
    sum of the DSRNA-CB and DSRNA-JB objectives. (The paper's unweighted sum would add a term bounded
    in (−1, 1) to an unbounded one whose α-gradient is several times larger; notebook 05 measures
    the balance of the two weighted gradients.) R_CB is looked up when R is first called."""
    w_cb = dsrna_cb.default_gamma if w_cb is None else w_cb
    w_jb = dsrna_jb.default_gamma if w_jb is None else w_jb
    for name, w in (("w_cb", w_cb), ("w_jb", w_jb)):
        if not w >= 0:
            raise ValueError(f"{name} must be ≥ 0, got {w!r}")
    r_jb = dsrna_jb(norm=norm, **(jb_options or {}))
    r_cb = None

    def certified(model, x, y):
        nonlocal r_cb
        if r_cb is None:
            if "dsrna_cb" not in TERMS:
                raise ValueError("dsrna_combined needs the certified-bound term TERMS['dsrna_cb'] (rnas_lib.robustness), "
                                 "which is not registered; use method 'dsrna_jb' or register 'dsrna_cb' first")
            r_cb = TERMS["dsrna_cb"](norm=norm, **(cb_options or {}))
        return r_cb(model, x, y)

    def robustness(model, x, y):
        return w_cb * certified(model, x, y) + w_jb * r_jb(model, x, y)

    def with_logits(model, x, y):
        """(logits, R), the logits from R_J's forward pass."""
        logits, r_j = r_jb.with_logits(model, x, y)
        return logits, w_cb * certified(model, x, y) + w_jb * r_j

    robustness.with_logits = with_logits
    robustness.generator = r_jb.generator
    robustness.weights = {"w_cb": w_cb, "w_jb": w_jb}
    return robustness


dsrna_combined.default_gamma = 1.0


TERMS["dsrna_cb"] = dsrna_cb
TERMS["dsrna_jb"] = dsrna_jb
TERMS["dsrna_combined"] = dsrna_combined
