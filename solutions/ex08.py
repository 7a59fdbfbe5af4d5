"""Notebook 08's exercises."""
import torch


def fraction_certified(radii, eps):
    """An image is certified at ε > 0 when its certified radius is at least ε (a certificate at r covers
    every ball of radius ≤ r); a misclassified image has radius 0."""
    return float((radii >= eps).mean())


def gap_ratio(certified, attacked):
    """Certified / attack radius per image; NaN for a misclassified image (both 0). A certified radius
    above the attack radius would be a certificate that an attack broke."""
    if bool((certified > attacked).any()):
        raise ValueError("a certified radius exceeds its attack radius: a broken certificate")
    return torch.where(attacked > 0, certified / attacked, torch.full_like(certified, float("nan")))
