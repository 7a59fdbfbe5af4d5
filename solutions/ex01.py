"""Notebook 01's exercises."""
import math


def project(x_adv, x, eps):
    """Clamp δ = x_adv − x to [−ε, ε] per pixel, then clip the image to [0, 1] (both are boxes, so
    doing one after the other is the projection onto their intersection)."""
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def radius(n, eps):
    """(2ε)ⁿ = π^{n/2} rⁿ / Γ(n/2 + 1), solved for r in log space."""
    return 2 * eps / math.sqrt(math.pi) * math.exp(math.lgamma(n / 2 + 1) / n)


