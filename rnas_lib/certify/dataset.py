"""Certification over a dataset: ``certified_mask`` and ``certified_accuracy`` (the fraction
certified at one ε, a lower bound of the robust accuracy that every attack's accuracy must stay
above), and ``average_certified_bound`` (CNN-Cert's average certified lower bound: the mean radius
over N images, per norm and target type). Certificates refuse a model in train mode (BatchNorm on
the certified batch's own statistics) unless ``batch_statistics=True``, which certifies the network
with BatchNorm fixed to the whole batch's statistics (``batchnorm.frozen_batch_statistics``)."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..attacks import check_norm
from ..batchnorm import check_certifiable
from ..data import TensorData, batches
from ..devices import model_device
from ..display import progress as progress_bar
from ..parallel import check_workers, in_processes
from .ball import check_ball
from .radius import RECHECK_MARGIN, whole_box_radius
from .search import (as_float64, certified_radius, float64_certificates, group_size, grouped_certificates,
                     network_to_certify)
from .settings import Settings
from .trace import trace


def certified_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown",
                   clip=(0.0, 1.0), relu_slope: str = "adaptive", recheck: bool = True,
                   batch_statistics: bool = False, alpha_steps: int = 20, workers: int = 1) -> torch.Tensor:
    """(B,) bool: x is classified as y and the margin lower bound over the ε-ball is positive,
    i.e. no x' in the ball (∩ the clip box) is classified otherwise. ``recheck``: a float32
    certificate must also hold in float64 with a margin > RECHECK_MARGIN. ``workers``: processes,
    as in ``certified_radius``."""
    settings = Settings(norm=norm, method=method, clip=clip, relu_slope=relu_slope, alpha_steps=alpha_steps,
                        recheck=recheck)
    eps = check_ball(x, eps, settings.clip).view(-1)
    workers = check_workers(workers)
    model, logits, y = network_to_certify(model, x, y, batch_statistics)
    with torch.no_grad():
        ok = logits.argmax(1) == y
        i = ok.nonzero().squeeze(1)
        if len(i):
            ok[i] = in_processes(certified_samples, (model, x[i], y[i], eps[i], settings), len(i), workers)
    return ok


@torch.no_grad()
def certified_samples(model, x, y, eps, settings: Settings) -> torch.Tensor:
    """``certified_mask`` of correctly classified samples."""
    graph = trace(model, x)
    i = torch.arange(len(x), device=x.device)
    m, _ = grouped_certificates(model, x, y, None, i, eps, settings, group_size(settings.method, graph))
    ok = m > 0
    if settings.recheck and x.dtype != torch.float64 and bool(ok.any()):
        i = ok.nonzero().squeeze(1)
        m, _ = float64_certificates(as_float64(model), x, y, None, i, eps[i], settings,
                                    group_size(settings.method, graph, torch.float64))
        ok[i] = m > RECHECK_MARGIN
    return ok


def certified_accuracy(model: nn.Module, data: TensorData, eps, norm="inf", method="crown",
                       batch_size: int = 100, clip=(0.0, 1.0), relu_slope: str = "adaptive", workers: int = 1) -> float:
    """Fraction of ``data`` certified at ε (``certified_mask``, in ``workers`` processes): a lower
    bound of the true robust accuracy at ε, as any attack's accuracy is an upper bound."""
    if len(data) == 0:
        raise ValueError("data is empty: nothing to certify")
    certified = sum(int(certified_mask(model, x, y, eps, norm, method, clip, relu_slope, workers=workers).sum())
                    for x, y in batches(data, batch_size, device=model_device(model)))
    return certified / len(data)


def average_certified_bound(model: nn.Module, data: TensorData, norm="inf", method="crown",
                            target: str = "untargeted", n: int | None = None, eps_max: float | None = None,
                            tol: float = 1e-6, rtol: float = 0.01, batch_size: int = 100, seed: int = 0,
                            progress: bool = True, workers: int = 1) -> dict:
    """CNN-Cert's "average certified lower bound": the mean certified radius over the first ``n``
    images of ``data`` (misclassified ones count 0), as a JSON-ready record with every radius;
    ``workers`` processes certify each batch (``certified_radius``).

    Record keys: norm, method, target, n, eps_max, tol, rtol, mean_radius, mean_radius_correct (over
    the correctly classified images), clean_accuracy, seconds, radii (list)."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer or None (all images), got {n!r}")
        data = data.subset(slice(0, n))
    if len(data) == 0:
        raise ValueError("data is empty: nothing to certify")
    check_certifiable(model, False)
    norm = check_norm(norm)
    generator = torch.Generator().manual_seed(seed)
    radii, correct = [], []
    start = time.perf_counter()
    bar = progress_bar(batches(data, batch_size, device=model_device(model)), total=math.ceil(len(data) / batch_size),
                       desc=f"certify ℓ{'∞' if norm == 'inf' else norm} {method}", disable=not progress, unit="batch")
    for x, y in bar:
        radii.append(certified_radius(model, x, y, norm, method, target, eps_max, tol, rtol, generator=generator,
                                      workers=workers))
        with torch.no_grad():
            correct.append(trace(model, x).values[-1].argmax(1) == y)
    seconds = time.perf_counter() - start
    r, ok = torch.cat(radii), torch.cat(correct)
    if eps_max is None:
        eps_max = whole_box_radius(norm, data.x.shape[1:])
    return {"norm": norm, "method": method, "target": target, "n": len(r), "eps_max": float(eps_max),
            "tol": float(tol), "rtol": float(rtol), "mean_radius": r.mean().item(),
            "mean_radius_correct": r[ok].mean().item() if bool(ok.any()) else 0.0,
            "clean_accuracy": ok.float().mean().item(), "seconds": seconds, "radii": r.tolist()}
