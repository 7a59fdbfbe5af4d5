"""Notebook 10's exercises."""
import numpy as np


def kendall_tau(x, y):
    """Over all pairs i < j: the signs of x_i − x_j and y_i − y_j agree (concordant), differ
    (discordant) or one is 0 (tied, in neither count); τ_b divides by √((n₀ − n_x)(n₀ − n_y))."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    return float((sx * sy).sum() / np.sqrt((sx != 0).sum() * (sy != 0).sum()))


def top_k_overlap(metric, target, k):
    """The k indices with the largest metric against the k with the largest target."""
    best_by_metric = set(np.argsort(-np.asarray(metric))[:k])
    best_by_target = set(np.argsort(-np.asarray(target))[:k])
    return len(best_by_metric & best_by_target) / k
