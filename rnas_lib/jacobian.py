"""Norms of the input–output Jacobian J(x) = ∂f(x)/∂x ∈ R^{C×n}, per sample, differentiable.

Why: to first order (Taylor), f_k(x + δ) − f_k(x) ≈ J_k(x)·δ, and by Hölder
    |J_k(x)·δ| ≤ ‖J_k(x)‖_q ‖δ‖_p,   1/p + 1/q = 1,
so inside the ball ‖δ‖_p ≤ ε every logit moves by at most about ε‖J_k(x)‖_q (ℓ∞ threat → q = 1,
ℓ2 threat → q = 2), and the whole output by ‖f(x+δ) − f(x)‖_2 ≲ ‖J‖_op ‖δ‖_2 ≤ ‖J‖_F ‖δ‖_2.
Small Jacobian norms mean small first-order output changes: the JB metric of DSRNA.

``jacobian_norm(model, x, n_proj=1, mode=..., q=...) -> (B,)`` computes, for each sample:

mode ``"exact"``       every row J_k (C backward passes, batched): with ``q="fro"`` the squared
                       Frobenius norm ‖J‖_F² = Σ_k ‖J_k‖_2², with ``q=1`` or ``2`` the row-norm sum
                       Σ_k ‖J_k‖_q.
mode ``"projection"``  Hoffman et al. (2019): for v uniform on the unit sphere of R^C,
                       E[vvᵀ] = I/C, so E_v ‖vᵀJ‖_2² = ‖J‖_F²/C and
                           ‖J‖_F² ≈ (C/n_proj) Σ_{i=1}^{n_proj} ‖v_iᵀJ‖_2²,
                       an unbiased estimate with one backward pass per projection (``q="fro"`` only;
                       its variance is (2C·tr(A²) − 2·tr(A)²)/((C+2)·n_proj), A = JJᵀ).
mode ``"top_logit"``   the predicted class ŷ = argmax_k f_k(x) only: ‖J_ŷ‖_q (``q="fro"``: ‖J_ŷ‖_2²),
                       one backward pass (the form of the only public code, docs/paper.md, letter C).

``n_proj="exact"`` is short for ``mode="exact"`` (the stable call form); otherwise the mode defaults
to ``"projection"``. Inputs are pixels (the model's first layer normalises), so J is per pixel.

Differentiable: the rows come from ``torch.autograd.grad(..., create_graph=True)``, so the result can
sit inside a loss and its gradient w.r.t. the weights and α flows by double backward.

BatchNorm. In eval mode BatchNorm is a fixed affine map and samples do not interact. In train mode
(during search) a BatchNorm normalises with the batch's statistics, which couples the samples: the
batch Jacobian ∂f_b/∂x_{b'} is not block-diagonal. rnas holds the *clean batch's statistics constant
with respect to the input* (as ``rnas_lib.bounds`` does): J is the Jacobian of the network whose
BatchNorms are the affine maps z ↦ (z − μ_B)/σ_B·γ + β with μ_B, σ_B the statistics of this batch's
clean activations. The statistics remain functions of the weights and α, so the gradient of the
metric w.r.t. them includes their dependence on the statistics. Implementation: during the forward
pass of ``jacobian_norm`` a torch-function mode catches every batch-statistics ``F.batch_norm`` call
(however the model makes it) and normalises with μ_B and σ_B² computed here and passed through a
gate that is the identity forwards and blocks gradient only during the backward passes that form
the rows of J; the outer backward (the loss's) goes through it. Running means and variances are not
updated by ``jacobian_norm`` (modules still count the call in ``num_batches_tracked``).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .attacks import check_norm

MODES = ("projection", "exact", "top_logit")
ROW_NORMS = ("fro", 1, 2)
THREAT_NORMS = ("inf", 2)


def dual_norm(norm) -> int:
    """q with 1/p + 1/q = 1 for the threat norm p: ℓ∞ → 1, ℓ2 → 2 (every spelling ``check_norm`` accepts)."""
    return 1 if check_norm(norm) == "inf" else 2


class _StatGate(torch.autograd.Function):
    """Identity; blocks the gradient while ``_StatGate.closed`` (see the module docstring)."""

    closed = False

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        return None if _StatGate.closed else grad


def _batch_norm_args(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                     eps=1e-5):
    return input, running_mean, running_var, weight, bias, training, momentum, eps


def _frozen_stats_batch_norm(z, weight, bias, eps):
    """(z − μ_B)·γ/s + β, s = √(σ_B² + eps), with the batch's statistics passed through the gate.

    Computed as (z − μ_d)/s_d·γ' + β' with detached statistics μ_d, s_d and the affine pair
    γ' = γ·s_d/s, β' = β − γ·(μ − μ_d)/s, which equals (γ, β) in value and carries the gradient to
    μ and s: (z − μ_d)/s_d·γ' + β' = γ(z − μ)/s + β. Elementwise ops, not the eval-mode kernel:
    its double backward reduces channels-last tensors several times slower. Returns the output and
    (μ_d, σ²_d).
    """
    dims = (0,) + tuple(range(2, z.dim()))
    mean = z.mean(dims)
    var = ((z * z).mean(dims) - mean * mean).clamp_min(0.0)  # E z² − μ²: two fast passes on CPU
    mean, var = _StatGate.apply(mean), _StatGate.apply(var)
    inv = torch.rsqrt(var + eps)
    ratio = inv * (var.detach() + eps).sqrt()  # s_d / s
    offset = (mean - mean.detach()) * inv  # (μ − μ_d)/s
    w = ratio if weight is None else weight * ratio
    b = -offset if weight is None else -weight * offset
    if bias is not None:
        b = b + bias
    shape = (1, -1) + (1,) * (z.dim() - 2)  # per channel
    scale = (w * torch.rsqrt(var.detach() + eps)).view(shape)
    out = torch.addcmul(b.view(shape), z - mean.detach().view(shape), scale)
    return out, (mean.detach(), var.detach())


class frozen_batch_stats(TorchFunctionMode):
    """Within ``with frozen_batch_stats():`` every batch-statistics ``F.batch_norm`` call (train mode,
    however the model calls it) normalises with its batch's statistics routed through the gate;
    running-statistics (eval) calls are unchanged. Running statistics are updated as a training
    forward pass would update them only if ``update_running_stats``."""

    def __init__(self, update_running_stats: bool = False):
        super().__init__()
        self.update_running_stats = update_running_stats

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            z, running_mean, running_var, weight, bias, training, momentum, eps = _batch_norm_args(*args, **kwargs)
            if training or running_mean is None:
                out, (mean, var) = _frozen_stats_batch_norm(z, weight, bias, eps)
                if self.update_running_stats and training and running_mean is not None:
                    n = z.numel() // z.shape[1]
                    with torch.no_grad():
                        running_mean.lerp_(mean, momentum)
                        running_var.lerp_(var * (n / max(n - 1, 1)), momentum)
                return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def _stats_cut():
    _StatGate.closed = True
    try:
        yield
    finally:
        _StatGate.closed = False


def _check(n_proj, mode, q):
    if mode is None:
        mode = "exact" if isinstance(n_proj, str) and n_proj == "exact" else "projection"
    if mode not in MODES:
        raise ValueError(f"unknown Jacobian mode {mode!r}; allowed: {', '.join(MODES)}")
    if isinstance(n_proj, str):
        if n_proj != "exact":
            raise ValueError(f"n_proj must be a positive integer or 'exact', got {n_proj!r}")
        if mode != "exact":
            raise ValueError(f"n_proj='exact' contradicts mode={mode!r}; pass mode='exact' or an integer n_proj")
    elif mode == "projection" and (isinstance(n_proj, bool) or not isinstance(n_proj, int) or n_proj < 1):
        raise ValueError(f"n_proj must be a positive integer (number of random projections) or 'exact', got {n_proj!r}")
    if q not in ROW_NORMS or isinstance(q, bool):
        raise ValueError(f"unknown row norm q={q!r}; allowed: 'fro' (squared Frobenius), 1 (dual of ℓ∞), 2 (dual of ℓ2)")
    if mode == "projection" and q != "fro":
        raise ValueError(
            f"random projections estimate only the Frobenius norm, got q={q!r}; "
            "use q='fro', or mode='exact' for the row norms Σ_k ‖J_k‖_q"
        )
    return mode


def _row_norms(rows: torch.Tensor, q) -> torch.Tensor:
    """rows (R, B, *input) → (B,): Σ_r ‖row‖_2² ('fro') or Σ_r ‖row‖_q."""
    flat = rows.flatten(2)
    if q == "fro":
        return flat.pow(2).sum((0, 2))
    return torch.linalg.vector_norm(flat, ord=q, dim=2).sum(0)


def jacobian_norm(model: nn.Module, x: torch.Tensor, n_proj=1, *, mode: str | None = None, q="fro",
                  create_graph: bool = True, generator: torch.Generator | None = None, return_logits: bool = False):
    """Per-sample Jacobian norm of ``model`` at pixels ``x`` (B, …) → (B,); see the module docstring.

    ``n_proj``: projections (mode "projection") or "exact"; ``mode``: "projection" | "exact" |
    "top_logit"; ``q``: "fro" (squared Frobenius), 1 or 2 (row norms; use ``dual_norm(p)``);
    ``create_graph``: keep the graph for a gradient of the result; ``generator``: for the projections;
    ``return_logits``: return ``(norms, logits)``, the logits (B, C) of the same forward pass, which
    then stands in for the model's own training forward (running statistics updated as usual) — a
    loss CE(logits) + λ·norm needs no second forward.
    """
    mode = _check(n_proj, mode, q)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a batch of inputs (B, …), got {type(x).__name__} "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
    create_graph = create_graph and torch.is_grad_enabled()
    with torch.enable_grad():  # rows need a graph even under no_grad; the result keeps one only if asked
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        with frozen_batch_stats(update_running_stats=return_logits):
            out = model(x)
        if out.dim() != 2:
            raise ValueError(f"the model must return logits of shape (B, C), got {tuple(out.shape)}")
        B, C = out.shape
        if mode == "top_logit":
            seeds = torch.zeros_like(out).scatter_(1, out.detach().argmax(1, keepdim=True), 1.0).unsqueeze(0)
        elif mode == "exact":
            seeds = torch.eye(C, dtype=out.dtype, device=out.device).unsqueeze(1).expand(C, B, C)
        else:
            v = torch.randn(n_proj, B, C, dtype=out.dtype, generator=generator,
                            device=generator.device if generator is not None else out.device).to(out.device)
            seeds = v / torch.linalg.vector_norm(v, dim=2, keepdim=True)
        with _stats_cut():
            if len(seeds) == 1:
                rows = torch.autograd.grad(out, x, seeds[0], create_graph=create_graph)[0].unsqueeze(0)
            else:
                rows = torch.autograd.grad(out, x, seeds, create_graph=create_graph, is_grads_batched=True)[0]
    norms = _row_norms(rows, q)
    if mode == "projection":
        norms = norms * (C / n_proj)
    return (norms, out) if return_logits else norms


def first_order_bound(model: nn.Module, x: torch.Tensor, eps, norm="inf", mode: str = "projection", n_proj: int = 1,
                      *, create_graph: bool = True, generator: torch.Generator | None = None,
                      return_logits: bool = False):
    """Per-sample first-order bound (B,) on how far the output moves over ‖δ‖_p ≤ ε (p = ``norm``):

    mode "exact"       ε·Σ_k ‖J_k‖_q ≳ Σ_k |f_k(x+δ) − f_k(x)| = ‖Δf‖_1   (q the dual of p)
    mode "projection"  ε·κ_p·‖J‖_F ≳ ‖Δf‖_2, κ_2 = 1, κ_∞ = √n (n input pixels: ‖δ‖_2 ≤ √n‖δ‖_∞),
                       with ‖J‖_F the square root of the n_proj-projection estimate of ‖J‖_F²
    mode "top_logit"   ε·‖J_ŷ‖_q ≳ |f_ŷ(x+δ) − f_ŷ(x)|, ŷ the predicted class.
    ``return_logits``: also return the logits, as in ``jacobian_norm``.
    """
    q = dual_norm(norm)
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (the radius of the threat ball in pixel units), got {eps!r}")
    kwargs = dict(create_graph=create_graph, generator=generator, return_logits=return_logits)
    if mode == "projection":
        result = jacobian_norm(model, x, n_proj, mode=mode, **kwargs)
    else:
        result = jacobian_norm(model, x, n_proj, mode=mode, q=q, **kwargs)
    norms, logits = result if return_logits else (result, None)
    if mode == "projection":  # norms = the estimate of ‖J‖_F²
        kappa = 1.0 if q == 2 else x[0].numel() ** 0.5
        bound = eps * kappa * norms.clamp_min(torch.finfo(norms.dtype).tiny).sqrt()
    else:
        bound = eps * norms
    return (bound, logits) if return_logits else bound
