"""Certified radius per sample: the largest ε whose margin lower bound is still positive.

For a correctly classified x with label y, any ε with  lb(ε) > 0,  where lb(ε) is a lower bound of
min_{t∈T} f_y(x') − f_t(x') over the ε-ball (``certificates``), certifies that no x' in that
ball is classified as a t ∈ T. ``certified_radius`` brackets the largest such ε per sample (growing
probes, then geometric bisection; ``radius.Bracket``), using that a failed probe's linear bound
still certifies a smaller radius, starting expensive methods from the radii of cheaper ones, and
re-checking float32 radii in float64. T (the CNN-Cert target types): ``untargeted`` all t ≠ y;
``runner-up`` the class with the second-highest clean logit; ``random`` a class t ≠ y drawn
uniformly (seeded by ``generator``); ``least-likely`` the class with the lowest clean logit.
A misclassified sample has radius 0. A sample certified at eps_max gets radius eps_max (a cap).
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
from torch import nn

from ..batchnorm import check_certifiable, frozen_batch_statistics
from ..parallel import check_workers, in_processes
from .ball import check_ball
from .certificates import check_labels, margin_certificate, margin_spec
from .forward import FORWARD_MAX_INPUTS, forward_mode_images
from .memory import ProbeMemory
from .radius import RECHECK_MARGIN, Bracket, whole_box_radius
from .settings import Settings
from .trace import trace

TARGETS = ("untargeted", "runner-up", "random", "least-likely")
#: images bounded together by a full-CROWN probe: its backward rows are padded to the largest number
#: of undecided neurons in the group, which varies several-fold between images, so one at a time
#: wastes least (benchmarks/bench_verify.py)
CROWN_GROUP = 1
#: full CROWN keeps each image's refined bounds from its failed probes for its smaller ones (``memory``);
#: False bounds every probe from scratch (the baseline of benchmarks/bench_verify.py --probe-memory)
KEEP_FAILED_PROBES = True
#: the cheaper bounds whose radii start the search of an expensive one (each radius is a certificate)
CHEAPER = {"crown-forward": ("crown-ibp",), "crown": ("crown-ibp", "crown-forward"),
           "alpha-crown": ("crown-ibp", "crown-forward")}
#: the most inputs per image (C·H·W) for which crown-forward's radius starts full CROWN's search. On 8×8
#: digits a crown-forward probe bounds many images in one pass and saves full-CROWN probes, one image
#: each; on 28×28 MNIST a full-CROWN probe at a small radius costs about what a crown-forward probe
#: does (the same forward-mode bounds, few neurons left to refine), so crown-forward's probes only
#: delay the search (benchmarks/bench_verify.py --starts)
FORWARD_START_MAX_INPUTS = FORWARD_MAX_INPUTS


def target_classes(logits: torch.Tensor, y: torch.Tensor, target: str,
                   generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The class t per sample for a CNN-Cert target type (None for ``untargeted``)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; allowed: {', '.join(TARGETS)}")
    if target == "untargeted":
        return None
    is_y = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    if target == "runner-up":
        return logits.masked_fill(is_y, -math.inf).argmax(1)
    if target == "least-likely":
        return logits.masked_fill(is_y, math.inf).argmin(1)
    shift = torch.randint(1, logits.shape[1], y.shape, generator=generator, device="cpu").to(y.device)
    return (y + shift) % logits.shape[1]


def network_to_certify(model: nn.Module, x: torch.Tensor, y, batch_statistics: bool) -> tuple:
    """(model, logits, y): the network a certificate bounds (BatchNorm fixed to the batch x's statistics
    when a train-mode model is allowed, ``batch_statistics``), its clean logits on x, and y checked
    as one label per sample."""
    check_certifiable(model, batch_statistics)
    if model.training:
        model = frozen_batch_statistics(model, x)
    with torch.no_grad():
        logits = trace(model, x).values[-1]
    return model, logits, check_labels(y, len(x), logits.shape[1], x.device)


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", method="crown",
                     target: str = "untargeted", eps_max: float | None = None, tol: float = 1e-6,
                     rtol: float = 0.01, clip=(0.0, 1.0), relu_slope: str = "adaptive",
                     generator: torch.Generator | None = None, alpha_steps: int = 20, recheck: bool = True,
                     batch_statistics: bool = False, workers: int = 1) -> torch.Tensor:
    """(B,) certified radius in pixel units (ℓ∞ or ℓ2) of each sample: every returned r has a margin
    lower bound > 0 on the r-ball (r = 0 for a misclassified sample), and the smallest radius found
    not certifiable is at most max(tol, rtol·r) above it (r = eps_max if that is certified).

    Search (per sample, vectorised; ``radius.Bracket``): probes grow ×4 from a start until one fails, then
    the crossing of the margin bound through 0 is interpolated from the probes' margins and the next
    probe placed just past it (geometric bisection when that stalls). A failed probe at ε still certifies the
    radius r(ε) < ε at which its own linear bound (built for the ε-ball, so sound on every smaller
    ball) concretises to 0 (``certificates.margin_certificate``), which narrows the bracket
    without another bound. For ``crown`` / ``alpha-crown`` the start is the ``crown-ibp`` radius
    (cheap, itself a certificate), refined by the ``crown-forward`` radius on images of at most
    FORWARD_START_MAX_INPUTS inputs, and probes grow ×1.5 where forward-mode bounds fit in memory
    (``forward.forward_mode_images``), else ×4. Only unfinished samples are bounded at each
    probe: one image at a time for crown, as many as fit in memory for crown-forward, all together
    for the others.
    ``recheck`` (default): a float32 radius is re-verified in float64 with a margin > RECHECK_MARGIN;
    where that fails, the search goes on below it (a float32 probe reads the bounds its image's failed
    float32 probes kept, which lift its margin near the crossing above what a float64 bound, reading
    only float64 probes' bounds, reaches). The probe expected to
    end a sample's search (below the crossing estimate, closing the bracket) is bounded in float64
    directly, so a radius it certifies needs no re-check.
    eps_max defaults to 1 for ℓ∞ (the whole [0, 1] box) and √(C·H·W) for ℓ2 (its diameter).
    ``workers`` > 1 (−1: every usable core) certifies chunks of the batch in that many processes
    (``rnas_lib.parallel``): a bound of an 8×8 image is too small to keep two threads busy, so
    processes are what use more cores there."""
    settings = Settings(norm=norm, method=method, clip=clip, relu_slope=relu_slope, alpha_steps=alpha_steps,
                        recheck=recheck, eps_max=eps_max, tol=tol, rtol=rtol)
    check_ball(x, 0.0, settings.clip)  # every pixel, before any sample is found misclassified
    if settings.eps_max is None:
        settings = replace(settings, eps_max=whole_box_radius(settings.norm, x.shape[1:]))
    workers = check_workers(workers)
    model, logits, y = network_to_certify(model, x, y, batch_statistics)
    with torch.no_grad():
        targets = target_classes(logits, y, target, generator)
        correct = logits.argmax(1) == y
        i = correct.nonzero().squeeze(1)
        lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        if len(i):
            t = None if targets is None else targets[i]
            lo[i] = in_processes(radii, (model, x[i], y[i], t, settings), len(i), workers)
        return lo


@torch.no_grad()
def radii(model, x, y, targets, settings: Settings) -> torch.Tensor:
    """The certified radii of correctly classified samples (``certified_radius``'s search)."""
    graph = trace(model, x)
    logits = graph.values[-1]
    # every bound is exact at ε = 0: the margin there is the clean one, over the bounded specification rows
    clean = (margin_spec(y, logits.shape[1], targets, logits.dtype) @ logits.unsqueeze(2)).squeeze(2).amin(1)
    lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    failed = torch.full_like(lo, settings.eps_max)
    # certified starts from cheaper bounds; crown-forward only where it fits in memory and the images are small
    fits = forward_mode_images(graph) > 0
    forward_start = fits and x[0].numel() <= FORWARD_START_MAX_INPUTS
    starts = [m for m in CHEAPER.get(settings.method, ()) if m != "crown-forward" or forward_start]
    for cheap in starts:
        lo, _, failed = search(model, x, y, targets, replace(settings, method=cheap, rtol=max(settings.rtol, 0.1)),
                               lo, growth=4.0, group=group_size(cheap, graph), clean=clean, first=failed)
    recheck = settings.recheck and x.dtype != torch.float64
    group64 = group_size(settings.method, graph, torch.float64)
    # full CROWN grows its probes ×1.5 where forward-mode bounds fit in memory (steps informed by the margin
    # bound's drop take it faster while that stays small), else ×4
    slow = fits and settings.method in ("crown", "alpha-crown")
    lo, verified, _ = search(model, x, y, targets, settings, lo, growth=1.5 if slow else 4.0,
                             group=group_size(settings.method, graph), clean=clean,
                             group64=group64 if recheck else None, first=failed)
    if recheck and bool(((lo > 0) & ~verified).any()):
        lo = recheck_radii(model, x, y, targets, lo, ~verified, settings, group64)
    return lo


def group_size(method: str, graph, dtype: torch.dtype | None = None) -> int:
    """Samples of the traced batch ``graph`` bounded together (in ``dtype``, default the trace's):
    CROWN_GROUP for full CROWN, as many as forward-mode bounds fit in memory for crown-forward (at
    least one: it was asked for), the whole batch for the others."""
    if method in ("crown", "alpha-crown"):
        return CROWN_GROUP
    if method == "crown-forward":
        return max(1, forward_mode_images(graph, dtype))
    return len(graph.values[0])



def search(model, x, y, targets, settings: Settings, lo, growth, group, clean, group64=None, first=None):
    """The bracket search of ``certified_radius`` from certified radii ``lo`` (B,) of correctly
    classified samples, one ``radius.Bracket`` per sample (``clean``: the margins at ε = 0); each round
    bounds the unfinished samples at their next probes, ``group`` at a time. With ``group64`` (the
    float64 group size), a probe that would end its search if certified, below the bracket's
    estimate of the crossing, is bounded in float64 (``float64_certificates``), ``group64`` at a
    time: when it certifies, the radius needs no re-check. ``first`` (B,): where a sample with no
    certified radius starts (the smallest radius a cheaper bound failed at; default eps_max/1024).
    Returns the radii (B,), whether each was certified in float64 (B,), and the smallest radius
    each failed at (B,; eps_max if none)."""
    brackets = [Bracket(float(lo[b]), float(settings.eps_max), growth, settings.rtol, settings.tol, float(clean[b]),
                        None if first is None else float(first[b])) for b in range(len(lo))]
    model64 = None
    # full CROWN, one image at a time: each image's failed probes leave their refined bounds for its smaller
    # ones, float32 probes' for float32 probes and float64 probes' for float64 probes
    keep = KEEP_FAILED_PROBES and settings.method in ("crown", "alpha-crown")
    memories = [ProbeMemory() for _ in brackets] if keep and group == 1 else None
    memories64 = [ProbeMemory() for _ in brackets] if keep and group64 == 1 else None
    for _ in range(100):
        i = [b for b in range(len(lo)) if not brackets[b].done()]
        # a finished search whose float32 radius needs the float64 re-check: failed, its bracket goes on below
        unchecked = [b for b in range(len(lo)) if group64 is not None and brackets[b].done()
                     and brackets[b].lo > 0 and not brackets[b].verified]
        if not i and not unchecked:
            break
        probes = [brackets[b].next_probe() for b in i] + [brackets[b].lo for b in unchecked]
        final = [group64 is not None and brackets[b].ends_if_certified(p) for b, p in zip(i, probes)]
        final, i = final + [True] * len(unchecked), i + unchecked
        for in64 in (False, True):
            k = [n for n, f in enumerate(final) if f == in64]
            if not k:
                continue
            idx = torch.tensor([i[n] for n in k], device=lo.device)
            eps = torch.tensor([probes[n] for n in k], dtype=lo.dtype, device=lo.device)
            if in64:
                model64 = as_float64(model) if model64 is None else model64
                m, r = float64_certificates(model64, x, y, targets, idx, eps, settings, group64,
                                            None if memories64 is None else [memories64[b] for b in idx.tolist()])
            else:
                m, r = grouped_certificates(model, x, y, targets, idx, eps, settings, group,
                                            memories=None if memories is None else [memories[b] for b in idx.tolist()])
            for b, p, mb, rb in zip(idx.tolist(), eps.tolist(), m.tolist(), r.tolist()):
                brackets[b].record(p, mb, rb, float64=in64)
    found = torch.tensor([br.lo for br in brackets], dtype=torch.float64, device=lo.device)
    return (round_down(found, lo.dtype),
            torch.tensor([br.verified for br in brackets], dtype=torch.bool, device=lo.device),
            torch.tensor([br.hi for br in brackets], dtype=lo.dtype, device=lo.device))


def round_down(r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Radii r in ``dtype``, rounded towards zero where ``dtype`` cannot hold them (a float64-certified
    radius rounded up to the nearest float32 would claim a ball a little larger than the certified one)."""
    t = r.to(dtype)
    return torch.where(t.to(r.dtype) > r, torch.nextafter(t, torch.zeros_like(t)), t)



def grouped_certificates(model, x, y, targets, i, eps, settings: Settings, size, threshold: float = 0.0,
                         memories: list | None = None):
    """``margin_certificate`` (m, r) for the samples i at radii ``eps``, ``size`` at a time
    (``memories``: one ``ProbeMemory`` per sample, with ``size`` 1)."""
    parts = [margin_certificate(model, x[j], y[j], eps[k], settings.norm, settings.method,
                                None if targets is None else targets[j], settings.clip, settings.relu_slope,
                                settings.alpha_steps, threshold,
                                memory=None if memories is None else memories[int(k[0])])
             for j, k in zip(i.split(size), torch.arange(len(i), device=i.device).split(size))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (for the float64 bounds that certify without a re-check)."""
    return copy.deepcopy(model).double()


def float64_certificates(model64, x, y, targets, i, eps, settings: Settings, group, memories: list | None = None):
    """``grouped_certificates`` of the samples i at radii ``eps`` by the float64 model ``model64``
    (``as_float64``), with margins held to RECHECK_MARGIN (the re-check of float32 certificates);
    ``memories``: float64 ``ProbeMemory``s, one per sample."""
    return grouped_certificates(model64, x.double(), y, targets, i, eps.double(), settings, group,
                                threshold=RECHECK_MARGIN, memories=memories)


def recheck_radii(model, x, y, targets, lo, which, settings: Settings, group):
    """Radii ``lo`` of the samples ``which`` (B,) bool re-verified in float64 (margin > RECHECK_MARGIN),
    ``group`` samples at a time, else the float64-certified r."""
    i = ((lo > 0) & which).nonzero().squeeze(1)
    m, r = float64_certificates(as_float64(model), x, y, targets, i, lo[i], settings, group)
    lo = lo.clone()
    lo[i] = torch.where(m > RECHECK_MARGIN, lo[i], round_down(r, lo.dtype).clamp(max=lo[i]))
    return lo
