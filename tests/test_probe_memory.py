"""Full CROWN's bounds kept from a failed probe (certify.memory.ProbeMemory): sound on every smaller
ball, never looser than fresh ones, fewer backward rows, and the same certified radii."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnas_lib.certify import refine, search
from rnas_lib.certify.certificates import bound_state, margin_certificate
from rnas_lib.certify.memory import ProbeMemory
from rnas_lib.certify.radius import Bracket
from rnas_lib.certify.search import certified_radius
from rnas_lib.certify.settings import Settings
from rnas_lib.certify.trace import trace

CROWN = Settings(norm="inf", method="crown")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5)).double().eval()


def _image(seed=1):
    return torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _points(x, eps, n=256, seed=2):
    """Points of the ℓ∞ ball ∩ [0, 1]: random ones and random corners."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *x.shape[1:], dtype=x.dtype, generator=gen) * 2 - 1
    u[n // 2:] = u[n // 2:].sign()
    return (x + eps * u).clamp(0, 1)


def _failed_probe(net, x, y, eps):
    """A memory filled by a probe at eps that is made to fail (threshold above any margin)."""
    memory = ProbeMemory()
    m, _ = margin_certificate(net, x, y, eps, "inf", "crown", threshold=math.inf, memory=memory)
    assert memory.eps == eps and memory.rows
    return memory


def test_kept_bounds_hold_on_every_smaller_ball():
    net, x = _net(), _image()
    y = net(x).argmax(1)
    memory = _failed_probe(net, x, y, 0.08)
    for eps in (0.08, 0.05, 0.01):
        state, _ = bound_state(net, x, eps, CROWN)
        values = trace(net, _points(x, eps)).values
        for z in memory.rows:
            l, u = memory.bounds(z, state.ball, state.g.shape(z))
            v = values[z]
            assert bool((v >= l - 1e-9).all()) and bool((v <= u + 1e-9).all()), (eps, z)
            assert bool(torch.isfinite(l).any() | torch.isfinite(u).any())


@pytest.mark.parametrize("eps", [0.07, 0.06])
def test_a_probe_with_memory_is_sound_no_looser_and_refines_fewer_neurons(eps):
    net, x = _net(), _image()
    y = net(x).argmax(1)
    memory = _failed_probe(net, x, y, 0.08)
    fresh, fresh_rows = bound_state(net, x, eps, CROWN, memory=ProbeMemory())
    kept, kept_rows = bound_state(net, x, eps, CROWN, memory=memory)
    values = trace(net, _points(x, eps)).values
    for z, (l, u) in kept.pre.items():
        assert bool((values[z] >= l - 1e-9).all()) and bool((values[z] <= u + 1e-9).all()), z
        # every relaxation a fresh probe closes is closed (a closed one is exact, whatever its bounds)
        open_kept = torch.stack(refine.undecided(kept, z, l, u)).any(0)
        open_fresh = torch.stack(refine.undecided(fresh, z, *fresh.pre[z])).any(0)
        assert not bool((open_kept & ~open_fresh).any()), z
    count = lambda rows: sum(int((r[0] >= 0).sum()) for r in rows.values())  # noqa: E731
    assert 0 < count(fresh_rows) and count(kept_rows) < count(fresh_rows)
    with torch.no_grad():
        m_fresh, _ = margin_certificate(net, x, y, eps, "inf", "crown")
        m_kept, _ = margin_certificate(net, x, y, eps, "inf", "crown", memory=memory)
    assert float(m_kept) >= float(m_fresh) - 1e-9


def test_a_memory_is_not_read_on_a_larger_ball_nor_kept_from_one():
    net, x = _net(), _image()
    y = net(x).argmax(1)
    memory = _failed_probe(net, x, y, 0.02)
    rows = dict(memory.rows)
    state, refined = bound_state(net, x, 0.05, CROWN, memory=memory)
    fresh, _ = bound_state(net, x, 0.05, CROWN)
    for z in state.pre:  # read nowhere: the bounds are the fresh ones
        torch.testing.assert_close(state.pre[z], fresh.pre[z], rtol=0, atol=0)
    memory.remember(0.05, refined)
    assert memory.eps == 0.02 and memory.rows.keys() == rows.keys()
    assert all(memory.rows[z][0] is rows[z][0] for z in rows)


def test_a_memory_refuses_a_batch():
    net = _net()
    x = torch.cat([_image(1), _image(3)])
    with pytest.raises(ValueError, match="one image at a time"):
        margin_certificate(net, x, net(x).argmax(1), 0.01, "inf", "crown", memory=ProbeMemory())


@pytest.mark.parametrize("norm,float64_probes", [("inf", False), (2, False), ("inf", True)])
def test_the_search_with_memories_certifies_the_same_radii_with_fewer_rows(monkeypatch, norm, float64_probes):
    """certified_radius (crown) with each image's failed probes kept: the radii agree with the search
    that forgets them (within the bracket's resolution), hold against points of the ball, and
    the backward passes bound fewer rows; so too where every probe is a float64 one (float64 probes
    keep a memory of their own)."""
    if float64_probes:
        monkeypatch.setattr(Bracket, "ends_if_certified", lambda self, eps: True)
    net = _net()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    net32 = _net().float()
    y = net32(x).argmax(1)
    rows = []
    crown_bounds = refine.crown_bounds
    monkeypatch.setattr(refine, "crown_bounds", lambda state, z, low, up, linear=False: rows.append(
        int(low.sum() + up.sum())) or crown_bounds(state, z, low, up, linear))
    kept = certified_radius(net32, x, y, norm, "crown")
    kept_rows = sum(rows)
    rows.clear()
    monkeypatch.setattr(search, "KEEP_FAILED_PROBES", False)
    forgot = certified_radius(net32, x, y, norm, "crown")
    assert (kept > 0).all()
    torch.testing.assert_close(kept, forgot, rtol=0.02, atol=1e-6)
    assert kept_rows < sum(rows)
    del net
    for b in range(len(x)):  # no point of the certified ball changes the class
        eps = float(kept[b])
        if norm == "inf":
            pts = _points(x[b : b + 1].double(), eps).float()
        else:
            d = torch.randn(256, *x.shape[1:], generator=torch.Generator().manual_seed(b))
            pts = (x[b] + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
        assert bool((net32(pts).argmax(1) == y[b]).all())
