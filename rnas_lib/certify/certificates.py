"""Bounds and certificates of a model's outputs over a ball, by method (the public entry points).

For an input x (pixels) and the ball  B = {x' : ‖x' − x‖_p ≤ ε}  (``ball``), rnas bounds every
output f_k(x') and the classification margin  m(x') = min_{t≠y} f_y(x') − f_t(x')  from below
(and above) for all x' ∈ B, on the network traced into primitive nodes (``trace``).

Methods (``settings.METHODS``)
------------------------------
``ibp``        interval bound propagation (``intervals``). The margin is computed on the margin
               itself: the specification rows c = e_y − e_t are propagated backward through the
               affine block after the last ReLU / max pool (exact there) and concretised on the
               intervals of that block's inputs.
``crown-ibp``  one backward linear-relaxation pass (``backward``) from the specification to the
               input, with the ReLU / max-pool relaxations built from IBP intermediate bounds.
``crown-forward``  the same final backward pass, with intermediate bounds from forward-mode linear
               bounds (``forward``), concretised on the ball and intersected with the intervals.
``crown``      full CROWN: the intermediate bounds of ``crown-forward`` (where they fit in
               FORWARD_MEMORY; else the intervals) refined by backward passes for every neuron
               whose relaxation they leave undecided and a tighter bound could decide (``refine``).
``alpha-crown``  ``crown`` with the lower ReLU slopes of the final pass optimised per
               specification row (``alpha``).
The final margin bound of every method is the larger of its linear bound and the IBP bound on the
same (refined) intervals: both are sound lower bounds, so their maximum is.
``margin_certificate`` also returns the radius r ≤ ε certified by the linear bound built for the
ε-ball (relaxations sound on a ball are sound on every smaller one); ``implicit_radius`` makes the
certified radius differentiable (implicit function theorem); ``block_widths`` says where the
bound loosens. Everything is plain differentiable torch: the bounds have gradients w.r.t.
weights, α and ε.
"""
from __future__ import annotations

import torch
from torch import nn

from ..attacks import check_norm
from .alpha import optimized_lower
from .backward import backward, lower
from .ball import Ball, check_ball
from .graph import BoundGraph
from .intervals import ibp_intermediate
from .memory import ProbeMemory
from .refine import crown_intermediate
from .settings import Settings
from .state import BoundState
from .trace import trace


def bound_state(model, x, eps, settings: Settings, graph: BoundGraph | None = None,
                memory: ProbeMemory | None = None) -> tuple[BoundState, dict]:
    """The bounds of ``settings.method`` on the intermediate nodes of ``model`` over the ε-ball
    around x (``graph``: an existing trace of the model on x), and the linear functions full CROWN
    refined per node when a ``memory`` (of a larger ball of the same image) is read ({} otherwise)."""
    eps_t = check_ball(x, eps, settings.clip)
    if graph is None:
        graph = trace(model, x)
    elif graph.values[0].shape != x.shape or not torch.equal(graph.values[0], x):
        raise ValueError("graph must be a trace of the model on x (use trace(model, x_batch).head(len(x)) "
                         f"when x is the head of a larger batch); it holds inputs of shape {tuple(graph.values[0].shape)}")
    state = BoundState(graph, Ball(graph.values[0], eps_t, settings.norm, settings.clip), settings.relu_slope)
    refined = {}
    if settings.method == "crown-forward":
        crown_intermediate(state, refine=False, forward=True)
    elif settings.method in ("crown", "alpha-crown"):
        refined = crown_intermediate(state, memory=memory)
    else:
        ibp_intermediate(state)
    return state, refined


def spec_certificate(state: BoundState, spec: torch.Tensor, method: str, alpha_steps: int):
    """(lower (B, S), Λ, β): the better of the IBP bound (on the refined intervals) and the linear
    bound of ``method`` per row — both are sound, so their maximum is; Λ, β of the linear bound."""
    out = state.g.output
    ibp = lower(state, out, spec, stop_at_nonlinear=True)
    if method == "ibp":
        return ibp, None, None
    if method == "alpha-crown":
        lb, coef, offset = optimized_lower(state, out, spec, alpha_steps)
    else:
        coef, offset = backward(state, out, spec)
        lb = offset if coef is None else offset + state.ball.concretize(coef)
    return torch.maximum(lb, ibp), coef, offset


def spec_bounds(model: nn.Module, x: torch.Tensor, spec: torch.Tensor, eps, norm="inf", method="crown-ibp",
                clip=(0.0, 1.0), relu_slope="adaptive", graph: BoundGraph | None = None,
                alpha_steps: int = 20) -> torch.Tensor:
    """Lower bounds (B, S) of spec[b, s]·f(x') over the ball, spec of shape (B, S, num_classes).
    ``graph``: an existing trace of ``model`` on x, to reuse its forward pass (see BoundGraph.head).
    ``alpha_steps``: optimisation steps of the ReLU slopes for ``method="alpha-crown"``."""
    settings = Settings(norm=norm, method=method, clip=clip, relu_slope=relu_slope, alpha_steps=alpha_steps)
    state, _ = bound_state(model, x, eps, settings, graph)
    K = state.g.shape(state.g.output)
    if spec.dim() != 3 or spec.shape[0] != x.shape[0] or tuple(spec.shape[2:]) != K:
        raise ValueError(f"spec must have shape ({x.shape[0]}, S, {K[0]}), got {tuple(spec.shape)}")
    return spec_certificate(state, spec.to(x.dtype), method, settings.alpha_steps)[0]


def output_bounds(model: nn.Module, x: torch.Tensor, eps, norm="inf", method="crown-ibp", clip=(0.0, 1.0),
                  relu_slope="adaptive") -> tuple[torch.Tensor, torch.Tensor]:
    """(lb, ub), each (B, num_classes): lb ≤ f(x') ≤ ub for every x' with ‖x' − x‖_norm ≤ eps
    (and x' in the ``clip`` box unless clip is None). eps: a number or one per sample (B,).
    relu_slope: "adaptive" (CROWN) or "fast-lin" lower ReLU slopes."""
    K = num_classes(model)
    eye = torch.eye(K, dtype=x.dtype, device=x.device)
    spec = torch.cat([eye, -eye]).expand(x.shape[0], 2 * K, K)
    lb = spec_bounds(model, x, spec, eps, norm, method, clip, relu_slope)
    return lb[:, :K], -lb[:, K:]


def other_classes(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K − 1): for each label y_b the classes t ≠ y_b in increasing order (the rows of ``margin_spec``)."""
    others = torch.arange(num_classes, device=y.device).expand(len(y), -1)
    return others[others != y.unsqueeze(1)].view(len(y), num_classes - 1)


def margin_spec(y: torch.Tensor, num_classes: int, targets: torch.Tensor | None = None, dtype=torch.float32):
    """Rows e_y − e_t: all t ≠ y (B, K−1, K), or one given target per sample (B, 1, K)."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    if targets is None:
        return eye[y].unsqueeze(1) - eye[other_classes(y, num_classes)]
    if targets.shape != y.shape:
        raise ValueError(f"targets must have one class per sample, shape {tuple(y.shape)}, got {tuple(targets.shape)}")
    if bool((targets == y).any()):
        raise ValueError("a target class equals the true label y; targets must differ from y")
    return (eye[y] - eye[targets]).unsqueeze(1)


def check_labels(y, n: int, num_classes: int, device=None) -> torch.Tensor:
    """y as a tensor of n class labels in 0..num_classes − 1, else one ValueError that says so."""
    y = torch.as_tensor(y, device=device)
    if y.shape != (n,) or bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"y must hold one label per sample, {n} labels in 0..{num_classes - 1}; got {y.tolist()}")
    return y


def margin_rows(model, x, y, targets):
    """The margin's specification rows (``margin_spec``) after checking the labels and targets."""
    K = num_classes(model)
    y = check_labels(y, x.shape[0], K, x.device)
    if targets is not None:
        targets = torch.as_tensor(targets, device=x.device)
        if bool(((targets < 0) | (targets >= K)).any()):
            raise ValueError(f"targets must be labels in 0..{K - 1}, got {targets.tolist()}")
    return margin_spec(y, K, targets, x.dtype)


def margin_lower_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown-ibp",
                       targets: torch.Tensor | None = None, clip=(0.0, 1.0), relu_slope="adaptive",
                       graph: BoundGraph | None = None, alpha_steps: int = 20) -> torch.Tensor:
    """(B,) lower bound of min_{t≠y} f_y(x') − f_t(x') over the ball (of f_y − f_{targets} if given),
    computed on the margin itself (specification rows e_y − e_t propagated backward).
    ``graph``: an existing trace of ``model`` on x, to reuse its forward pass (see BoundGraph.head).
    The bound is differentiable (the search and certified training use its gradient): to evaluate
    it, call it under ``torch.no_grad()``, or autograd keeps every intermediate bound and backward
    coefficient alive (full CROWN on a 28×28 network then needs tens of GiB)."""
    spec = margin_rows(model, x, y, targets)
    return spec_bounds(model, x, spec, eps, norm, method, clip, relu_slope, graph, alpha_steps).amin(1)


def margin_certificate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown",
                       targets: torch.Tensor | None = None, clip=(0.0, 1.0), relu_slope="adaptive",
                       alpha_steps: int = 20, threshold: float = 0.0,
                       memory: ProbeMemory | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, r), each (B,): m the margin lower bound over the ε-ball (as ``margin_lower_bound``) and
    r ≤ ε a radius that the same bound certifies: ε where m > threshold, else the largest ε' whose
    concretisation of the linear bound (Λ, β) built at ε is still > threshold (0 for ``ibp``,
    whose bound is not linear in the input). Relaxations sound on the ε-ball are sound on every
    smaller ball, so r is a certificate without another backward pass.
    ``memory`` (full CROWN, one image): a ``ProbeMemory`` whose linear bounds from a larger ball of
    x are reused where they hold; a probe that fails leaves its own refined functions in it, for
    the smaller balls the search probes next."""
    if memory is not None and len(x) != 1:
        raise ValueError(f"a ProbeMemory holds the bounds of one image; got a batch of {len(x)} images (certify "
                         "one image at a time with a memory of its own)")
    spec = margin_rows(model, x, y, targets)
    settings = Settings(norm=norm, method=method, clip=clip, relu_slope=relu_slope, alpha_steps=alpha_steps)
    state, refined = bound_state(model, x, eps, settings, memory=memory)
    lb, coef, offset = spec_certificate(state, spec, method, settings.alpha_steps)
    m = lb.amin(1)
    if memory is not None and not bool(m > threshold):
        memory.remember(float(state.ball.eps), refined)
    eps_b = state.ball.eps.view(-1)
    if coef is None:
        r = torch.where(m > threshold, eps_b, torch.zeros_like(eps_b))
    else:
        r = torch.where(m > threshold, eps_b, state.ball.certified_below(coef, offset, threshold))
    return m, r


def implicit_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", method="crown-ibp",
                    eps_max: float = 1.0, iters: int = 14, clip=(0.0, 1.0)) -> torch.Tensor:
    """(B,) the radius ε*(x) at which the margin lower bound m(x, ε) crosses 0 (CNN-Cert's
    certified lower bound), differentiable in the model by the implicit function theorem:
        ρ = ε₀ + m(x, ε₀) / (−∂_ε m(x, ε₀)),   ∇ρ = −∇m / ∂_ε m   at m(x, ε*) = 0,
    ε₀ found by ``iters`` steps of geometric bisection on [eps_max·1e-6, eps_max] without gradient
    (ρ is then the Newton step from ε₀, so ρ ≈ ε* to second order). Where the bound does not certify
    eps_max·1e-6, the bracket is [ε_min, eps_max·1e-6] with ε_min = max(eps_max·1e-15, 8·(the dtype's
    machine epsilon)): below a few ulps of a pixel the ball is lost in rounding, so float32 reaches
    radii down to ~1e-6 and float64 down to ~1e-15. Where even ε_min is not certified
    (a negative clean margin: misclassified), ε₀ = 0 and ρ < 0 is the signed distance of the
    linearised bound: misclassified images push the same way as certified ones. ∂_ε m is held
    constant in the gradient."""
    norm = check_norm(norm)
    with torch.no_grad():
        lo = torch.full((len(x),), eps_max * 1e-6, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, float(eps_max))
        top = margin_lower_bound(model, x, y, hi, norm, method, clip=clip) > 0
        bottom = margin_lower_bound(model, x, y, lo, norm, method, clip=clip) > 0
        eps_min = max(eps_max * 1e-15, 8 * torch.finfo(x.dtype).eps)
        if not bottom.all() and eps_min < eps_max * 1e-6:  # radii below the first floor
            low = margin_lower_bound(model, x, y, torch.full_like(lo, eps_min), norm, method, clip=clip) > 0
            below = low & ~bottom
            lo, hi = torch.where(below, eps_min, lo), torch.where(below, lo, hi)
            bottom = bottom | below
        for _ in range(iters):
            mid = (lo * hi).sqrt()
            ok = margin_lower_bound(model, x, y, mid, norm, method, clip=clip) > 0
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        eps0 = torch.where(top, hi, torch.where(bottom, (lo * hi).sqrt(), torch.zeros_like(lo)))
    eps0 = eps0.requires_grad_(True)
    with torch.enable_grad():
        m = margin_lower_bound(model, x, y, eps0, norm, method, clip=clip)
        (slope,) = torch.autograd.grad(m.sum(), eps0, retain_graph=torch.is_grad_enabled())
    slope = slope.detach().clamp(max=-1e-12)  # ∂_ε m < 0: a wider ball never raises a lower bound
    return eps0.detach() + m / -slope


def block_widths(model: nn.Module, x: torch.Tensor, eps, norm="inf", method="crown", clip=(0.0, 1.0),
                 relu_slope="adaptive") -> list[dict]:
    """Where a bound loosens: for the stem, every cell and the logits, the mean width u − l of the
    bounds on its output over the ball (the ``pre`` bounds that relax the next cell where there
    are, else the node's interval from the refined layers), and its growth over the previous
    block's width. Records: block, mean_width, growth (None for the stem)."""
    with torch.no_grad():
        state, _ = bound_state(model, x, eps, Settings(norm=norm, method=method, clip=clip, relu_slope=relu_slope))
    g = state.g
    rows = []
    nodes = [(label, out) for label, _, out in g.blocks] + [("logits", g.output)]
    for label, node in nodes:
        with torch.no_grad():
            l, u = state.pre[node] if node in state.pre else state.interval(node)
        width = float((u - l).mean())
        growth = width / rows[-1]["mean_width"] if rows and rows[-1]["mean_width"] > 0 else None
        rows.append({"block": label, "mean_width": width, "growth": growth})
    return rows


def num_classes(model: nn.Module) -> int:
    """The number of classes of ``model``: its ``num_classes``, else the width of its last Linear."""
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the number of classes of {type(model).__name__}: no Linear head")
    return linears[-1].out_features
