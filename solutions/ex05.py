"""Notebook 05's exercises."""
import math

import torch


def entropy(weights):
    """Mean over the edges of −Σ_o p_o ln p_o / ln|O|, with 0·ln 0 = 0 (the limit)."""
    p = torch.as_tensor(weights, dtype=torch.float64)
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    return (-plogp.sum(1) / math.log(p.shape[1])).mean().item()


def hvp(grad_alpha, w, v):
    """∇²_{α,w} L_train · v ≈ (∇_α L_train(w + r v) − ∇_α L_train(w − r v)) / 2r with r = 0.01/‖v‖:
    the step r·v has length 0.01 whatever the size of v."""
    r = 0.01 / v.norm()
    return (grad_alpha(w + r * v) - grad_alpha(w - r * v)) / (2 * r)
