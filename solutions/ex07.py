"""Notebook 07's exercises."""
import torch
import torch.nn.functional as F


def attack(model, x, y, eps, steps, step_size, mu):
    """ℓ∞ PGD with momentum (Dong et al. 2018, MI-FGSM), no random start."""
    x_adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        g = mu * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = x_adv.detach() + step_size * g.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


def accuracy(clean_ok, still_ok, dist, eps):
    """Robust at ε: correct clean, and the minimum-norm attack failed or needed more than ε."""
    return (clean_ok & (still_ok | (dist > eps))).double().mean().item()
