"""Notebook 03's exercises."""
import torch.nn.functional as F


def ibp_avg_pool(l, u):
    """The pool is affine with non-negative weights, hence monotone: the interval of its output over the
    box [l, u] is [pool(l), pool(u)], exact. DARTS' avg_pool_3x3 divides by the pixels inside the image."""
    def pool(z):
        return F.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)
    return pool(l), pool(u)


def fast_lin_lower_slope(l, u):
    """Fast-Lin takes the lower line parallel to the upper one, the chord from (l, 0) to (u, u)."""
    return u / (u - l)
