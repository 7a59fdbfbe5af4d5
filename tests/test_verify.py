"""certified_radius: every certificate holds (bound positive, PGD cannot break it), bisection is tight,
targeted radii dominate the untargeted one, bad input is refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnas_lib.bounds import margin_lower_bound
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.network import Network
from rnas_lib.verify import TARGETS, certified_radius, target_classes

TOL = 2e-4
EPS_MAX = {"inf": 0.2, 2: 0.8}


pytestmark = pytest.mark.usefixtures("one_thread_float64")


@pytest.fixture(scope="module")
def model_and_data(one_thread_float64):
    """A small derived network with random weights and BN statistics; labels = its predictions,
    except the last sample, which is given a wrong label."""
    torch.manual_seed(0)
    net = Network(PUBLISHED["DARTS_V2"], 2, 4, 3, in_channels=1, mean=[0.4], std=[0.3])
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.05, 0.2)
    net.eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[-1] = (y[-1] + 1) % 4
    return net, x, y


def pgd(model, x, y, eps, norm, steps=30, restarts=4, seed=0):
    """Untargeted PGD on the margin loss, projected onto the ball ∩ [0, 1]; the best of the restarts
    (smallest margin) per sample."""
    gen = torch.Generator().manual_seed(seed)
    e = eps.view(-1, 1, 1, 1)
    best_x, best_m = x.clone(), torch.full((len(x),), float("inf"))

    def margin(z):
        logits = model(z)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
        return logits.gather(1, y[:, None])[:, 0] - other

    def project(z):
        d = z - x
        if norm == "inf":
            d = torch.maximum(torch.minimum(d, e), -e)
        else:
            d = d * torch.clamp(e / d.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1), max=1.0)
        return (x + d).clamp(0, 1)

    for _ in range(restarts):
        z = project(x + e * (2 * torch.rand(x.shape, generator=gen) - 1))
        for _ in range(steps):
            z.requires_grad_(True)
            (g,) = torch.autograd.grad(margin(z).sum(), z)
            with torch.no_grad():
                if norm == "inf":
                    z = project(z - 2.5 * e / steps * g.sign())
                else:
                    z = project(z - 2.5 * e / steps * g / g.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1))
        with torch.no_grad():
            m = margin(z)
            better = m < best_m
            best_x[better], best_m[better] = z[better], m[better]
    return best_x, best_m


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_certificates_hold_and_bisection_is_tight(model_and_data, norm, method):
    net, x, y = model_and_data
    r = certified_radius(net, x, y, norm, method, eps_max=EPS_MAX[norm], tol=TOL)
    assert r[-1] == 0  # misclassified
    ok = r > 0
    assert ok.sum() >= 3
    with torch.no_grad():
        assert (margin_lower_bound(net, x, y, r, norm, method)[ok] > 0).all()
        assert (margin_lower_bound(net, x, y, (r - TOL).clamp(min=0), norm, method)[ok] > 0).all()
        if method == "ibp":  # IBP's margin bound decreases with ε, so one step up must fail
            assert (margin_lower_bound(net, x, y, r + TOL, norm, method)[ok] <= 0).all()
    # PGD with restarts at the certified radius never changes a certified prediction
    _, m = pgd(net, x[ok], y[ok], r[ok], norm)
    assert (m > 0).all()


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_has_teeth(model_and_data, norm):
    """The attack used above does break these samples a few times beyond the (crown) radius."""
    net, x, y = model_and_data
    r = certified_radius(net, x, y, norm, "crown", eps_max=EPS_MAX[norm], tol=TOL)
    ok = r > 0
    _, m = pgd(net, x[ok], y[ok], 20 * r[ok], norm)
    assert (m <= 0).any()


def test_targeted_radii_dominate_the_untargeted_one(model_and_data):
    net, x, y = model_and_data
    untargeted = certified_radius(net, x, y, "inf", "ibp", tol=TOL)
    logits = net(x).detach()
    for target in TARGETS[1:]:
        r = certified_radius(net, x, y, "inf", "ibp", target=target, tol=TOL, generator=torch.Generator().manual_seed(3))
        assert (r >= untargeted).all(), target
    t = target_classes(logits, y, "least-likely")
    assert (t == logits.argmin(1)).all() or (t != y).all()
    runner = target_classes(logits, y, "runner-up")
    assert (runner != y).all() and (logits.gather(1, runner[:, None])[:, 0] >= logits.gather(1, t[:, None])[:, 0]).all()
    a = target_classes(logits, y, "random", torch.Generator().manual_seed(5))
    b = target_classes(logits, y, "random", torch.Generator().manual_seed(5))
    assert (a == b).all() and (a != y).all()


def test_radius_caps_at_eps_max(model_and_data):
    net, x, y = model_and_data
    r = certified_radius(net, x, y, "inf", "crown-ibp", eps_max=1e-4, tol=1e-5)
    correct = net(x).argmax(1) == y
    assert torch.equal(r[correct], torch.full_like(r[correct], 1e-4))


def test_bad_inputs_give_clear_errors(model_and_data):
    net, x, y = model_and_data
    with pytest.raises(ValueError, match="target"):
        certified_radius(net, x, y, target="second")
    with pytest.raises(ValueError, match="tol"):
        certified_radius(net, x, y, tol=0)
    with pytest.raises(ValueError, match="eps_max"):
        certified_radius(net, x, y, eps_max=-1.0)
    with pytest.raises(ValueError, match="norm"):
        certified_radius(net, x, y, norm="l1")
    with pytest.raises(ValueError, match="method"):
        certified_radius(net, x, y, method="exact")
    with pytest.raises(ValueError, match="label"):
        certified_radius(net, x, y[:2])
