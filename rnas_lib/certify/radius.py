"""The radius search's bracket, in plain Python: one sample's certified radius ``lo``, the smallest
radius found not certifiable ``hi``, and where to probe next (growth, then estimates of the
crossing of the margin bound m(ε) through 0). The torch driver is ``search``."""
from __future__ import annotations

import math

#: float64 margin (logit units) that the re-check of a float32 certificate demands: well above the
#: round-off of a float64 bound (~1e-13 on these networks), so a re-checked certificate is sound
RECHECK_MARGIN = 1e-8


def whole_box_radius(norm, image_shape) -> float:
    """The radius of a ball that covers the whole [0, 1] box: 1 for ℓ∞, its diameter √(C·H·W) for ℓ2."""
    return 1.0 if norm == "inf" else math.sqrt(math.prod(image_shape))




class Bracket:
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
    faster than ε² near its crossing, so q lands just below the
    crossing, whence one more probe brackets it tightly. Once bracketed, the crossing is estimated
    from the two probes that bracket it and m₀, as the crossing of m₀ − c·ε^k through them
    (``power_crossing``), else by inverse quadratic interpolation through three of the probes and
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
        self.start = lo  # the certified radius the search starts from
        self.clean, self.first = clean, eps_max / 1024 if first is None else min(first, eps_max / 1024)
        self.points: list[tuple[float, float]] = []  # (probe, margin bound there)
        self.widths: list[float] = []  # log(hi / lo) after each probe once bracketed
        self.failed = False
        self.verified = False  # lo was certified by a float64 bound (margin > RECHECK_MARGIN)
        self.certified64: set[float] = set()  # the probes a float64 bound certified
        self.estimate: float | None = None  # the crossing estimate behind the last bracketed probe

    def done(self) -> bool:
        return self.lo >= self.hi or self.closes(self.lo, self.hi)

    def closes(self, lo: float, hi: float) -> bool:
        """Whether a bracket [lo, hi] is within the search's resolution."""
        return hi - lo <= max(self.rtol * hi, self.tol)

    def ends_if_certified(self, eps: float) -> bool:
        """Whether a probe at ``eps`` would end the search if certified, and is expected to be: the
        bracket is closed on the right and ``eps`` lies at or below the crossing estimate. Such a
        probe is worth bounding in float64, where it needs no re-check."""
        return (self.failed and self.closes(eps, self.hi)
                and self.estimate is not None and eps <= self.estimate)

    def record(self, eps: float, m: float, r: float, float64: bool = False) -> None:
        """The margin bound m at a probe ε and the radius r its linear bound certifies; ``float64``:
        a float64 bound, whose certificates need margin > RECHECK_MARGIN and need no re-check. A float64
        probe at a float32-certified lo is its re-check: failed, it ends the bracket there, and lo falls
        back to the largest smaller probe with a positive margin, or to r where that is larger."""
        self.points = [q for q in self.points if q[0] != eps] + [(eps, m)]  # a float64 bound replaces float32's
        if m > (RECHECK_MARGIN if float64 else 0.0):
            self.lo, self.verified = eps, float64
            if float64:
                self.certified64.add(eps)
        else:
            self.hi, self.failed = min(self.hi, eps), True
            if eps <= self.lo:  # a float64 bound refutes the float32 certificate lo: fall back to a smaller one
                self.lo = max([q for q, mq in self.points if mq > 0 and q < eps] + [self.start if self.start < eps else 0.0])
                self.verified = self.lo in self.certified64
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
                est = crossing(ok[-2], ok[-1])
                if est is not None:
                    p = min(p, max(est * (1 + 0.4 * self.rtol), lo * (1 + 2 * self.rtol)))
            return min(p, self.eps_max)
        self.estimate = None
        if lo <= 0:
            return hi / 4
        mid = math.sqrt(lo * hi)
        stalled = len(self.widths) >= 3 and self.widths[-1] > 0.5 * self.widths[-3]
        est = self.estimate = None if stalled else self.estimate_crossing()
        if est is None or not lo < est < hi:
            return mid
        below = est * (1 - 0.4 * self.rtol)
        p = below if self.closes(below, hi) else est * (1 + 0.4 * self.rtol)
        inner = 1 + 0.1 * self.rtol  # strictly inside the bracket
        return min(max(p, lo * inner), hi / inner) if hi / lo > inner**2 else mid

    def estimate_crossing(self) -> float | None:
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
            est = power_crossing(a, b, clean)
            if est is not None and a[0] < est < b[0]:
                return est
        third = [q for q in (pos[-2] if len(pos) > 1 else None, neg[1] if len(neg) > 1 else None) if q is not None]
        if third:
            c = min(third, key=lambda q: abs(q[1]))
            est = inverse_quadratic(a, b, c)
            if est is not None and a[0] < est < b[0]:
                return est
        return crossing(a, b)


def power_crossing(a, b, clean: float) -> float | None:
    """Where m(ε) = m₀ − c·ε^k through the points (ε, m) a and b (0 < ε_a < ε_b, drops
    0 < m₀ − m_a < m₀ − m_b) crosses 0: k = ln(d_b/d_a) / ln(ε_b/ε_a), ε = ε_a·(m₀/d_a)^(1/k).
    A CROWN margin bound's drop from its clean value is close to such a power of ε, so two probes
    far apart still locate the crossing."""
    (ea, ma), (eb, mb) = a, b
    da, db = clean - ma, clean - mb
    if not (0 < ea < eb and 0 < da < db):
        return None
    k = math.log(db / da) / math.log(eb / ea)
    return ea * (clean / da) ** (1 / k)


def crossing(a, b) -> float | None:
    """Where the line through the points (ε, m) a and b crosses m = 0 (None if it does not descend)."""
    (ea, ma), (eb, mb) = a, b
    if not (eb - ea) * (ma - mb) > 0:
        return None
    return ea + ma * (eb - ea) / (ma - mb)


def inverse_quadratic(a, b, c) -> float | None:
    """ε at m = 0 of the quadratic ε(m) through three points (ε, m) with distinct m."""
    (ea, ma), (eb, mb), (ec, mc) = a, b, c
    if ma == mb or mb == mc or ma == mc:
        return None
    return (ea * mb * mc / ((ma - mb) * (ma - mc)) + eb * ma * mc / ((mb - ma) * (mb - mc))
            + ec * ma * mb / ((mc - ma) * (mc - mb)))
