"""Notebook 06's exercises."""
import math

import torch


def lr(epoch, epochs, lr_max, lr_min):
    """η_e = η_min + ½(η_max − η_min)(1 + cos(π e / E))."""
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


def drop(h, p, generator):
    """One Bernoulli(1 − p) mask per sample, broadcast over channels and pixels, survivors ×1/(1 − p)."""
    keep = (torch.rand(h.shape[0], 1, 1, 1, generator=generator) >= p).to(h.dtype)
    return h * keep / (1 - p)
