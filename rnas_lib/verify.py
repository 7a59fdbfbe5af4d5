"""Certified radius per sample: the largest ε whose margin lower bound is still positive.

For a correctly classified x with label y, any ε with  lb(ε) > 0,  where lb(ε) is a lower bound of
min_{t∈T} f_y(x') − f_t(x') over the ε-ball (``rnas_lib.bounds``), certifies that no x' in that
ball is classified as a t ∈ T. ``certified_radius`` brackets the largest such ε per sample (growing
probes, then geometric bisection), using that a failed probe's linear bound still certifies a
smaller radius, starting expensive methods from the radii of cheaper ones, and re-checking float32
radii in float64. T (the CNN-Cert target types): ``untargeted`` all t ≠ y; ``runner-up`` the class
with the second-highest clean logit; ``random`` a class t ≠ y drawn uniformly (seeded by
``generator``); ``least-likely`` the class with the lowest clean logit.
A misclassified sample has radius 0. A sample certified at eps_max gets radius eps_max (a cap).
Over a dataset: ``certified_accuracy`` (the fraction certified at one ε, a lower bound of the
robust accuracy that every attack's accuracy must stay above) and ``average_certified_bound``
(CNN-Cert's average certified lower bound: the mean radius over N images, per norm and target type).
The empirical side: ``falsify_margin`` and ``attack_radius`` (the smallest radius at which PGD
succeeds, an upper bound of the true radius); ``certification_gap`` = certified / PGD radius.
Certificates refuse a model in train mode (BatchNorm on the certified batch's own statistics)
unless ``batch_statistics=True``, which certifies the network with BatchNorm fixed to the whole
batch's statistics (``frozen_batch_statistics``), whichever samples a probe bounds.
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from .attacks import _check_count, _check_eps, _direction, _project, _random_start, check_norm
from .bounds import _check_args, check_labels, forward_mode_images, margin_spec, trace
from .data import TensorData, batches
from .devices import model_device
from .display import progress as progress_bar
from .parallel import check_workers, in_processes

TARGETS = ("untargeted", "runner-up", "random", "least-likely")


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


#: float64 margin (logit units) that the re-check of a float32 certificate demands: well above the
#: round-off of a float64 bound (~1e-13 on these networks), so a re-checked certificate is sound
RECHECK_MARGIN = 1e-8


def whole_box_radius(norm, image_shape) -> float:
    """The radius of a ball that covers the whole [0, 1] box: 1 for ℓ∞, its diameter √(C·H·W) for ℓ2."""
    return 1.0 if norm == "inf" else math.sqrt(math.prod(image_shape))


def check_certifiable(model: nn.Module, batch_statistics: bool) -> None:
    """Certificates bound the network as it classifies: BatchNorm on its running statistics."""
    if model.training and not batch_statistics:
        raise ValueError(f"{type(model).__name__} is in train mode, where BatchNorm normalises with the statistics of "
                         "the batch being certified, so a certificate would depend on the batch; call model.eval() "
                         "first, or pass batch_statistics=True if that batch-dependent network is what you mean")


def frozen_batch_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """An eval-mode copy of ``model`` whose BatchNorms normalise with the statistics of the batch x
    (mean and biased variance, as train mode does): the network that a train-mode model applies to
    x, held fixed over the ε-ball, so that every probe of a certificate bounds the same network
    whichever samples it bounds."""
    frozen = copy.deepcopy(model).train()
    stats = {}

    def record(m, inputs, output):
        v = inputs[0]
        stats[m] = (v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False))

    norms = [m for m in frozen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_hook(record) for m in norms]
    try:
        with torch.no_grad():
            frozen(x)
    finally:
        for h in handles:
            h.remove()
    for m in norms:
        mean, var = stats[m]
        m.running_mean, m.running_var, m.track_running_stats = mean.clone(), var.clone(), True
    return frozen.eval()


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", method="crown",
                     target: str = "untargeted", eps_max: float | None = None, tol: float = 1e-6,
                     rtol: float = 0.01, clip=(0.0, 1.0), relu_slope: str = "adaptive",
                     generator: torch.Generator | None = None, alpha_steps: int = 20, recheck: bool = True,
                     batch_statistics: bool = False, workers: int = 1) -> torch.Tensor:
    """(B,) certified radius in pixel units (ℓ∞ or ℓ2) of each sample: every returned r has a margin
    lower bound > 0 on the r-ball (r = 0 for a misclassified sample), and the smallest radius found
    not certifiable is at most max(tol, rtol·r) above it (r = eps_max if that is certified).

    Search (per sample, vectorised; ``_Bracket``): probes grow ×4 from a start until one fails, then
    the crossing of the margin bound through 0 is interpolated from the probes' margins and the next
    probe placed just past it (geometric bisection when that stalls). A failed probe at ε still certifies the
    radius r(ε) < ε at which its own linear bound (built for the ε-ball, so sound on every smaller
    ball) concretises to 0 (``rnas_lib.bounds.margin_certificate``), which narrows the bracket
    without another bound. For ``crown`` / ``alpha-crown`` the start is the ``crown-ibp`` radius
    (cheap, itself a certificate) refined by the ``crown-forward`` radius, and probes grow ×1.5
    (where forward-mode bounds do not fit in memory, ``bounds.forward_mode_images``, from
    crown-ibp's, ×4). Only unfinished samples are bounded at each probe: one image at a time for
    crown, as many as fit in memory for crown-forward, all together for the others.
    ``recheck`` (default): a float32 radius is re-verified in float64 with a margin > RECHECK_MARGIN;
    a sample that fails gets the radius that float64 bound certifies instead. The probe expected to
    end a sample's search (below the crossing estimate, closing the bracket) is bounded in float64
    directly, so a radius it certifies needs no re-check.
    eps_max defaults to 1 for ℓ∞ (the whole [0, 1] box) and √(C·H·W) for ℓ2 (its diameter).
    ``workers`` > 1 (−1: every usable core) certifies chunks of the batch in that many processes
    (``rnas_lib.parallel``): a bound of an 8×8 image is too small to keep two threads busy, so
    processes are what use more cores there."""
    for name, v in (("tol", tol), ("rtol", rtol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{name} must be a number ≥ 0 (the bracket's resolution), got {v!r}")
    if not (tol > 0 or rtol > 0):
        raise ValueError(f"tol and rtol cannot both be 0 (the search would never stop); got tol={tol!r}, rtol={rtol!r}")
    # method, norm, clip box and every pixel, before any sample is found misclassified
    _, norm = _check_args(x, 0.0, norm, method, clip, relu_slope)
    if eps_max is None:
        eps_max = whole_box_radius(norm, x.shape[1:])
    if isinstance(eps_max, bool) or not isinstance(eps_max, (int, float)) or not eps_max > 0:
        raise ValueError(f"eps_max must be a positive number, got {eps_max!r}")
    alpha_steps = _check_count("alpha_steps", alpha_steps)
    workers = check_workers(workers)
    check_certifiable(model, batch_statistics)
    if model.training:
        model = frozen_batch_statistics(model, x)
    with torch.no_grad():
        logits = trace(model, x).values[-1]
        y = check_labels(y, len(x), logits.shape[1], x.device)
        targets = target_classes(logits, y, target, generator)
        correct = logits.argmax(1) == y
        i = correct.nonzero().squeeze(1)
        lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        if len(i):
            settings = (norm, method, eps_max, tol, rtol, clip, relu_slope, alpha_steps, recheck)
            t = None if targets is None else targets[i]
            lo[i] = in_processes(_radii, (model, x[i], y[i], t, settings), len(i), workers)
        return lo


@torch.no_grad()
def _radii(model, x, y, targets, settings) -> torch.Tensor:
    """The certified radii of correctly classified samples (``certified_radius``'s search)."""
    norm, method, eps_max, tol, rtol, clip, relu_slope, alpha_steps, recheck = settings
    graph = trace(model, x)
    logits = graph.values[-1]
    # every bound is exact at ε = 0: the margin there is the clean one, over the bounded specification rows
    clean = (margin_spec(y, logits.shape[1], targets, logits.dtype) @ logits.unsqueeze(2)).squeeze(2).amin(1)
    lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    failed = torch.full_like(lo, eps_max)
    # certified starts from cheaper bounds; crown-forward only where it fits in memory (as crown itself uses it)
    starts = [m for m in _CHEAPER.get(method, ()) if m != "crown-forward" or forward_mode_images(graph) > 0]
    for cheap in starts:
        lo, _, failed = _search(model, x, y, targets, norm, cheap, eps_max, tol, max(rtol, 0.1), clip, relu_slope,
                                alpha_steps, lo, growth=4.0, group=_group_size(cheap, graph), clean=clean,
                                first=failed)
    recheck = recheck and x.dtype != torch.float64
    group64 = _group_size(method, graph, torch.float64)
    lo, verified, _ = _search(model, x, y, targets, norm, method, eps_max, tol, rtol, clip, relu_slope, alpha_steps,
                              lo, growth=1.5 if "crown-forward" in starts else 4.0, group=_group_size(method, graph),
                              clean=clean, group64=group64 if recheck else None, first=failed)
    if recheck and bool(((lo > 0) & ~verified).any()):
        lo = _recheck(model, x, y, targets, lo, ~verified, norm, method, clip, relu_slope, alpha_steps, group64)
    return lo


#: images bounded together by a full-CROWN probe: its backward rows are padded to the largest number
#: of undecided neurons in the group, which varies several-fold between images, so one at a time
#: wastes least (benchmarks/bench_verify.py)
CROWN_GROUP = 1
#: the cheaper bounds whose radii start the search of an expensive one (each radius is a certificate)
_CHEAPER = {"crown-forward": ("crown-ibp",), "crown": ("crown-ibp", "crown-forward"),
            "alpha-crown": ("crown-ibp", "crown-forward")}


def _group_size(method: str, graph, dtype: torch.dtype | None = None) -> int:
    """Samples of the traced batch ``graph`` bounded together (in ``dtype``, default the trace's):
    CROWN_GROUP for full CROWN, as many as forward-mode bounds fit in memory for crown-forward (at
    least one: it was asked for), the whole batch for the others."""
    if method in ("crown", "alpha-crown"):
        return CROWN_GROUP
    if method == "crown-forward":
        return max(1, forward_mode_images(graph, dtype))
    return len(graph.values[0])


def _search(model, x, y, targets, norm, method, eps_max, tol, rtol, clip, relu_slope, alpha_steps, lo,
            growth, group, clean, group64=None, first=None):
    """The bracket search of ``certified_radius`` from certified radii ``lo`` (B,) of correctly
    classified samples, one ``_Bracket`` per sample (``clean``: the margins at ε = 0); each round
    bounds the unfinished samples at their next probes, ``group`` at a time. With ``group64`` (the
    float64 group size), a probe that would end its search if certified, below the bracket's
    estimate of the crossing, is bounded in float64 (``_float64_certificates``), ``group64`` at a
    time: when it certifies, the radius needs no re-check. ``first`` (B,): where a sample with no
    certified radius starts (the smallest radius a cheaper bound failed at; default eps_max/1024).
    Returns the radii (B,), whether each was certified in float64 (B,), and the smallest radius
    each failed at (B,; eps_max if none)."""
    brackets = [_Bracket(float(lo[b]), float(eps_max), growth, rtol, tol, float(clean[b]),
                         None if first is None else float(first[b])) for b in range(len(lo))]
    model64 = None
    for _ in range(100):
        i = [b for b in range(len(lo)) if not brackets[b].done()]
        if not i:
            break
        probes = [brackets[b].next_probe() for b in i]
        final = [group64 is not None and brackets[b].ends_if_certified(p) for b, p in zip(i, probes)]
        for in64 in (False, True):
            k = [n for n, f in enumerate(final) if f == in64]
            if not k:
                continue
            idx = torch.tensor([i[n] for n in k], device=lo.device)
            eps = torch.tensor([probes[n] for n in k], dtype=lo.dtype, device=lo.device)
            if in64:
                model64 = _as_float64(model) if model64 is None else model64
                m, r = _float64_certificates(model64, x, y, targets, idx, eps, norm, method, clip, relu_slope,
                                             alpha_steps, group64)
            else:
                m, r = _grouped_certificates(model, x, y, targets, idx, eps, norm, method, clip, relu_slope,
                                             alpha_steps, group)
            for b, p, mb, rb in zip(idx.tolist(), eps.tolist(), m.tolist(), r.tolist()):
                brackets[b].record(p, mb, rb, float64=in64)
    radii = torch.tensor([br.lo for br in brackets], dtype=torch.float64, device=lo.device)
    return (_round_down(radii, lo.dtype),
            torch.tensor([br.verified for br in brackets], dtype=torch.bool, device=lo.device),
            torch.tensor([br.hi for br in brackets], dtype=lo.dtype, device=lo.device))


def _round_down(r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Radii r in ``dtype``, rounded towards zero where ``dtype`` cannot hold them (a float64-certified
    radius rounded up to the nearest float32 would claim a ball a little larger than the certified one)."""
    t = r.to(dtype)
    return torch.where(t.to(r.dtype) > r, torch.nextafter(t, torch.zeros_like(t)), t)


class _Bracket:
    """One sample's search for the radius where the margin bound m(ε) of a method crosses 0:
    ``lo`` certified, ``hi`` a probe that failed (or eps_max), done when hi − lo ≤ max(rtol·hi, tol).

    Probes grow by ``growth`` (from 1.5·lo, or with nothing certified from ``first``, default
    eps_max/1024: a tight bound's first probe where a cheaper one failed) until one fails, and faster where the
    last one left the margin bound close to the clean margin m₀ = m(0) (a bound is exact at ε = 0):
    with m(p) = m₀ − d, the chord from (0, m₀) crosses 0 at p·m₀/d, beyond the crossing of a concave
    m, and a drop m₀ − m(ε) that grows quadratically crosses at p·√(m₀/d). The next probe aims
    2·rtol short of that, q = p·min(√(m₀/d), MAX_GROWTH)·(1 − 2·rtol): q itself where it exceeds
    p·growth, else (until two probes are certified and their secant caps the step) a cap on
    p·growth, at least p·(1 + 2·rtol). A CROWN bound's drop grows a little
    faster than ε² near its crossing (as ε^2.2–2.4 on the smoke network), so q lands just below the
    crossing, whence one more probe brackets it tightly. Once bracketed, the crossing is estimated
    from the two probes that bracket it and m₀, as the crossing of m₀ − c·ε^k through them
    (``_power_crossing``), else by inverse quadratic interpolation through three of the probes and
    (0, m₀), else the chord of the two that bracket it; the next probe is placed a fraction
    0.4·rtol below that estimate where, certified, it would close the bracket, else 0.4·rtol above
    it, so that a good estimate closes the bracket in two probes, the last one certified (and so
    worth bounding in float64: ``ends_if_certified``); a probe stays strictly inside the
    bracket, and whenever two probes have not halved its (log) width the probe is the geometric
    midpoint instead (as in Brent's method). While growing, the secant of the last two certified
    probes (which overshoots a concave m(ε)) caps the next probe. A failed probe still certifies
    the radius r < ε its own linear bound reaches (``margin_certificate``)."""

    #: the most the informed growth multiplies a probe by
    MAX_GROWTH = 64.0

    def __init__(self, lo: float, eps_max: float, growth: float, rtol: float, tol: float, clean: float | None = None,
                 first: float | None = None):
        self.lo, self.hi, self.eps_max, self.growth, self.rtol, self.tol = lo, eps_max, eps_max, growth, rtol, tol
        self.clean, self.first = clean, eps_max / 1024 if first is None else min(first, eps_max / 1024)
        self.points: list[tuple[float, float]] = []  # (probe, margin bound there)
        self.widths: list[float] = []  # log(hi / lo) after each probe once bracketed
        self.failed = False
        self.verified = False  # lo was certified by a float64 bound (margin > RECHECK_MARGIN)
        self.estimate: float | None = None  # the crossing estimate behind the last bracketed probe

    def done(self) -> bool:
        return self.lo >= self.hi or self._closes(self.lo, self.hi)

    def _closes(self, lo: float, hi: float) -> bool:
        """Whether a bracket [lo, hi] is within the search's resolution."""
        return hi - lo <= max(self.rtol * hi, self.tol)

    def ends_if_certified(self, eps: float) -> bool:
        """Whether a probe at ``eps`` would end the search if certified, and is expected to be: the
        bracket is closed on the right and ``eps`` lies at or below the crossing estimate. Such a
        probe is worth bounding in float64, where it needs no re-check."""
        return (self.failed and self._closes(eps, self.hi)
                and self.estimate is not None and eps <= self.estimate)

    def record(self, eps: float, m: float, r: float, float64: bool = False) -> None:
        """The margin bound m at a probe ε and the radius r its linear bound certifies; ``float64``:
        a float64 bound, whose certificates need margin > RECHECK_MARGIN and need no re-check."""
        self.points.append((eps, m))
        if m > (RECHECK_MARGIN if float64 else 0.0):
            self.lo, self.verified = eps, float64
        else:
            self.hi, self.failed = eps, True
            if min(r, eps) > self.lo:
                self.lo, self.verified = min(r, eps), float64
        if self.failed:
            self.widths.append(math.log(self.hi / self.lo) if self.lo > 0 else math.inf)

    def next_probe(self) -> float:
        lo, hi = self.lo, self.hi
        if not self.failed:
            if not self.points:
                return min(1.5 * lo, self.eps_max) if lo > 0 else self.first
            last, m = self.points[-1]
            p = self.growth * last
            ok = [q for q in self.points if q[1] > 0]
            if self.clean is not None and 0 < m < self.clean:
                # the crossing of a quadratic drop, a little short of it: past that of a steeper drop
                aim = last * min(math.sqrt(self.clean / (self.clean - m)), self.MAX_GROWTH) * (1 - 2 * self.rtol)
                if aim > p or len(ok) < 2:
                    p = aim if aim > p else max(aim, last * (1 + 2 * self.rtol))
            if len(ok) >= 2:
                est = _crossing(ok[-2], ok[-1])
                if est is not None:
                    p = min(p, max(est * (1 + 0.4 * self.rtol), lo * (1 + 2 * self.rtol)))
            return min(p, self.eps_max)
        self.estimate = None
        if lo <= 0:
            return hi / 4
        mid = math.sqrt(lo * hi)
        stalled = len(self.widths) >= 3 and self.widths[-1] > 0.5 * self.widths[-3]
        est = self.estimate = None if stalled else self._estimate()
        if est is None or not lo < est < hi:
            return mid
        below = est * (1 - 0.4 * self.rtol)
        p = below if self._closes(below, hi) else est * (1 + 0.4 * self.rtol)
        inner = 1 + 0.1 * self.rtol  # strictly inside the bracket
        return min(max(p, lo * inner), hi / inner) if hi / lo > inner**2 else mid

    def _estimate(self) -> float | None:
        """The crossing of m(ε) through 0 estimated from the probes nearest to it on each side."""
        clean = self.clean if self.clean is not None and self.clean > 0 else None
        pos = sorted(q for q in self.points if q[1] > 0)
        if clean is not None:
            pos.insert(0, (0.0, clean))
        neg = sorted(q for q in self.points if q[1] <= 0)
        if not pos or not neg:
            return None
        a, b = pos[-1], neg[0]
        if clean is not None:
            est = _power_crossing(a, b, clean)
            if est is not None and a[0] < est < b[0]:
                return est
        third = [q for q in (pos[-2] if len(pos) > 1 else None, neg[1] if len(neg) > 1 else None) if q is not None]
        if third:
            c = min(third, key=lambda q: abs(q[1]))
            est = _inverse_quadratic(a, b, c)
            if est is not None and a[0] < est < b[0]:
                return est
        return _crossing(a, b)


def _power_crossing(a, b, clean: float) -> float | None:
    """Where m(ε) = m₀ − c·ε^k through the points (ε, m) a and b (0 < ε_a < ε_b, drops
    0 < m₀ − m_a < m₀ − m_b) crosses 0: k = ln(d_b/d_a) / ln(ε_b/ε_a), ε = ε_a·(m₀/d_a)^(1/k).
    A CROWN margin bound's drop from its clean value is close to such a power of ε (k ≈ 2.2–2.4
    for ℓ∞ and ≈ 3 for ℓ2 on the smoke network), so two probes far apart still locate the crossing."""
    (ea, ma), (eb, mb) = a, b
    da, db = clean - ma, clean - mb
    if not (0 < ea < eb and 0 < da < db):
        return None
    k = math.log(db / da) / math.log(eb / ea)
    return ea * (clean / da) ** (1 / k)


def _crossing(a, b) -> float | None:
    """Where the line through the points (ε, m) a and b crosses m = 0 (None if it does not descend)."""
    (ea, ma), (eb, mb) = a, b
    if not (eb - ea) * (ma - mb) > 0:
        return None
    return ea + ma * (eb - ea) / (ma - mb)


def _inverse_quadratic(a, b, c) -> float | None:
    """ε at m = 0 of the quadratic ε(m) through three points (ε, m) with distinct m."""
    (ea, ma), (eb, mb), (ec, mc) = a, b, c
    if ma == mb or mb == mc or ma == mc:
        return None
    return (ea * mb * mc / ((ma - mb) * (ma - mc)) + eb * ma * mc / ((mb - ma) * (mb - mc))
            + ec * ma * mb / ((mc - ma) * (mc - mb)))


def _grouped_certificates(model, x, y, targets, i, eps, norm, method, clip, relu_slope, alpha_steps, size,
                          threshold: float = 0.0):
    """``margin_certificate`` for the samples i, ``size`` at a time."""
    from .bounds import margin_certificate

    parts = [margin_certificate(model, x[j], y[j], eps[k], norm, method, None if targets is None else targets[j],
                                clip, relu_slope, alpha_steps, threshold)
             for j, k in zip(i.split(size), torch.arange(len(i), device=i.device).split(size))]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _as_float64(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (for the float64 bounds that certify without a re-check)."""
    return copy.deepcopy(model).double()


def _float64_certificates(model64, x, y, targets, i, eps, norm, method, clip, relu_slope, alpha_steps, group):
    """``_grouped_certificates`` of the samples i at radii ``eps`` by the float64 model ``model64``
    (``_as_float64``), with margins held to RECHECK_MARGIN (the re-check of float32 certificates)."""
    return _grouped_certificates(model64, x.double(), y, targets, i, eps.double(), norm, method, clip, relu_slope,
                                 alpha_steps, group, threshold=RECHECK_MARGIN)


def _recheck(model, x, y, targets, lo, which, norm, method, clip, relu_slope, alpha_steps, group):
    """Radii ``lo`` of the samples ``which`` (B,) bool re-verified in float64 (margin > RECHECK_MARGIN),
    ``group`` samples at a time, else the float64-certified r."""
    i = ((lo > 0) & which).nonzero().squeeze(1)
    m, r = _float64_certificates(_as_float64(model), x, y, targets, i, lo[i], norm, method, clip, relu_slope,
                                 alpha_steps, group)
    lo = lo.clone()
    lo[i] = torch.where(m > RECHECK_MARGIN, lo[i], _round_down(r, lo.dtype).clamp(max=lo[i]))
    return lo


# --------------------------------------------------------------------------- the empirical side
def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…,) f_y − max_{t≠y} f_t of logits (…, K)."""
    true = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.expand(logits.shape[:-1]).unsqueeze(-1), -math.inf)
    return true - others.amax(-1)


def ball_outputs(model: nn.Module, x: torch.Tensor, eps, norm="inf", n: int = 64,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, B, K) outputs of ``model`` at n uniform random points of each sample's ε-ball ∩ [0, 1]ⁿ:
    what every output bound must contain."""
    norm = check_norm(norm)
    eps_t = _check_eps(eps, x.shape[0], x)
    n = _check_count("n", n)
    with torch.no_grad():
        return torch.stack([model(_random_start(x, eps_t, norm, generator)) for _ in range(n)])


def falsify_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", n_random: int = 32,
                   steps: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) the smallest margin f_y(x') − max_{t≠y} f_t(x') found in the ε-ball ∩ [0, 1]ⁿ: over
    ``n_random`` random points, then ``steps`` steps of projected descent on the margin (step
    2.5·ε/steps, sign steps for ℓ∞, normalised ones for ℓ2) from the best of them. An upper estimate
    of the true minimum, so a sound ``margin_lower_bound`` never exceeds it (and a negative value is a
    real counterexample)."""
    norm = check_norm(norm)
    y = torch.as_tensor(y, device=x.device)
    eps_t = _check_eps(eps, x.shape[0], x)
    steps = _check_count("steps", steps)
    n_random = _check_count("n_random", n_random)
    with torch.no_grad():
        best_m = margins(model(x), y)
        best_x = x.clone()
        for _ in range(n_random):
            xr = _random_start(x, eps_t, norm, generator)
            m = margins(model(xr), y)
            better = m < best_m
            best_m, best_x = torch.where(better, m, best_m), torch.where(better.view(-1, 1, 1, 1), xr, best_x)
    xa, step = best_x, 2.5 * eps_t / steps
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(margins(model(xa), y).sum(), xa)
        with torch.no_grad():
            xa = _project(xa - step * _direction(grad, norm), x, eps_t, norm)
            m = margins(model(xa), y)
            best_m = torch.minimum(best_m, m)
    return best_m


def attack_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", eps_max: float | None = None,
                  steps: int = 20, restarts: int = 2, rtol: float = 0.05, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """(B,) the smallest radius at which PGD (``rnas_lib.attacks.pgd``, ``steps`` steps, ``restarts``
    random starts) finds an adversarial example, to within ``rtol`` (relative), by bisection per
    sample on [0, eps_max]: an *upper* bound of the true robustness radius, as a certified radius is
    a lower one. 0 for a misclassified sample; eps_max when PGD fails even there (a cap)."""
    from .attacks import pgd

    norm = check_norm(norm)
    if eps_max is None:
        eps_max = whole_box_radius(norm, x.shape[1:])
    y = torch.as_tensor(y, device=x.device)
    with torch.no_grad():
        correct = model(x).argmax(1) == y

    def broken(eps):
        x_adv = pgd(model, x, y, eps, norm, steps, restarts=restarts, generator=generator)
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    lo, hi = torch.zeros(len(x), dtype=x.dtype, device=x.device), torch.full((len(x),), float(eps_max), dtype=x.dtype,
                                                                                device=x.device)
    capped = ~broken(hi)
    for _ in range(60):
        if not bool(((hi - lo > rtol * hi) & correct & ~capped).any()):
            break
        mid = torch.where(lo > 0, (lo * hi).sqrt(), hi / 8)
        b = broken(mid)
        hi, lo = torch.where(b, mid, hi), torch.where(b, lo, mid)
    return torch.where(correct, hi, torch.zeros_like(hi))


def certification_gap(certified: torch.Tensor, attacked: torch.Tensor) -> torch.Tensor:
    """(B,) certified radius / PGD radius per image, in [0, 1] for every sound certificate (the
    closer to 1, the tighter the verifier); NaN where the image is misclassified (both are 0)."""
    gap = certified / attacked
    return torch.where(attacked > 0, gap, torch.full_like(gap, math.nan))


# --------------------------------------------------------------------------- over a dataset
def certified_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", method="crown",
                   clip=(0.0, 1.0), relu_slope: str = "adaptive", recheck: bool = True,
                   batch_statistics: bool = False, alpha_steps: int = 20, workers: int = 1) -> torch.Tensor:
    """(B,) bool: x is classified as y and the margin lower bound over the ε-ball is positive,
    i.e. no x' in the ball (∩ the clip box) is classified otherwise. ``recheck``: a float32
    certificate must also hold in float64 with a margin > RECHECK_MARGIN. ``workers``: processes,
    as in ``certified_radius``."""
    eps, norm = _check_args(x, eps, norm, method, clip, relu_slope)
    eps = eps.view(-1)
    alpha_steps = _check_count("alpha_steps", alpha_steps)
    workers = check_workers(workers)
    check_certifiable(model, batch_statistics)
    if model.training:
        model = frozen_batch_statistics(model, x)
    with torch.no_grad():
        logits = trace(model, x).values[-1]
        y = check_labels(y, len(x), logits.shape[1], x.device)
        ok = logits.argmax(1) == y
        i = ok.nonzero().squeeze(1)
        if len(i):
            settings = (norm, method, clip, relu_slope, alpha_steps, recheck)
            ok[i] = in_processes(_certified, (model, x[i], y[i], eps[i], settings), len(i), workers)
    return ok


@torch.no_grad()
def _certified(model, x, y, eps, settings) -> torch.Tensor:
    """``certified_mask`` of correctly classified samples."""
    norm, method, clip, relu_slope, alpha_steps, recheck = settings
    graph = trace(model, x)
    i = torch.arange(len(x), device=x.device)
    m, _ = _grouped_certificates(model, x, y, None, i, eps, norm, method, clip, relu_slope, alpha_steps,
                                 _group_size(method, graph))
    ok = m > 0
    if recheck and x.dtype != torch.float64 and bool(ok.any()):
        i = ok.nonzero().squeeze(1)
        m, _ = _float64_certificates(_as_float64(model), x, y, None, i, eps[i], norm, method, clip, relu_slope, alpha_steps,
                                     _group_size(method, graph, torch.float64))
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
