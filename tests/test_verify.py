"""certified_radius: every certificate holds (bound positive, PGD cannot break it), bisection is tight,
targeted radii dominate the untargeted one, bad input is refused."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rnas_lib import parallel
from rnas_lib.bounds import margin_lower_bound, output_bounds
from rnas_lib.data import TensorData
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.network import Network
from rnas_lib.verify import (TARGETS, average_certified_bound, ball_outputs, certified_mask, certified_radius,
                             falsify_margin, margins, target_classes)
from test_bounds import frozen as frozen_copy  # the independent frozen-BatchNorm copy the bound tests use

TOL = 2e-4
EPS_MAX = {"inf": 0.2, 2: 0.8}


pytestmark = pytest.mark.usefixtures("one_thread_float64")


@pytest.fixture(scope="module")
def model_and_data(one_thread_float64, tiny_network):
    """A small derived network with random weights and BN statistics; labels = its predictions,
    except the last sample, which is given a wrong label."""
    net, x, y = tiny_network(PUBLISHED["DARTS_V2"])
    y[-1] = (y[-1] + 1) % 4
    return net, x, y


def attack(model, x, y, eps, norm):
    """The smallest margin that random points and PGD on the margin find in the ball ∩ [0, 1]."""
    return falsify_margin(model, x, y, eps, norm, n_random=64, steps=40, generator=torch.Generator().manual_seed(0))


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
    # the attack at the certified radius never changes a certified prediction
    assert (attack(net, x[ok], y[ok], r[ok], norm) > 0).all()


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_has_teeth(model_and_data, norm):
    """The attack used above does break these samples a few times beyond the (crown) radius."""
    net, x, y = model_and_data
    r = certified_radius(net, x, y, norm, "crown", eps_max=EPS_MAX[norm], tol=TOL)
    ok = r > 0
    assert (attack(net, x[ok], y[ok], 20 * r[ok], norm) <= 0).any()


def test_targeted_radii_dominate_the_untargeted_one(model_and_data):
    net, x, y = model_and_data
    untargeted = certified_radius(net, x, y, "inf", "ibp", tol=TOL)
    logits = net(x).detach()
    for target in TARGETS[1:]:
        r = certified_radius(net, x, y, "inf", "ibp", target=target, tol=TOL, generator=torch.Generator().manual_seed(3))
        assert (r >= untargeted).all(), target
    t = target_classes(logits, y, "least-likely")
    for i in range(len(y)):  # the least likely class other than the label, by a plain loop
        others = [k for k in range(logits.shape[1]) if k != int(y[i])]
        assert int(t[i]) == min(others, key=lambda k: float(logits[i, k])), i
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


@pytest.mark.parametrize("norm", ["inf", 2])
def test_falsify_margin_reaches_the_exact_minimum_of_a_linear_margin(norm):
    """Two classes, no ReLU: the margin is affine in x', its minimum over the ball is the exact
    (backward) bound, and descent on the margin must reach it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Flatten(), nn.Linear(48, 2))
    x = 0.4 + 0.2 * torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))  # the box stays inactive
    y = torch.tensor([0, 1, 0])
    eps = 0.01 if norm == "inf" else 0.05
    exact = margin_lower_bound(net, x, y, eps, norm, "crown").detach()
    found = falsify_margin(net, x, y, eps, norm, n_random=4, steps=50)
    assert (found >= exact - 1e-9).all()
    # ℓ∞: sign steps reach the optimal corner; ℓ2: the projected steps turn towards −∇ only geometrically
    rtol = 1e-6 if norm == "inf" else 0.02
    torch.testing.assert_close(found, exact, rtol=rtol, atol=0)


def test_ball_outputs_lie_within_the_output_bounds(model_and_data):
    net, x, y = model_and_data
    outs = ball_outputs(net, x, 0.05, 2, n=32, generator=torch.Generator().manual_seed(0))
    lb, ub = output_bounds(net, x, 0.05, 2, "crown")
    assert outs.shape == (32, *lb.shape)
    assert (outs >= lb.detach() - 1e-9).all() and (outs <= ub.detach() + 1e-9).all()
    torch.testing.assert_close(margins(outs, y)[0], margins(outs[0], y))
    assert (margins(net(x).detach(), y)[:-1] > 0).all() and margins(net(x).detach(), y)[-1] < 0


def test_bad_inputs_give_clear_errors(model_and_data):
    net, x, y = model_and_data
    with pytest.raises(ValueError, match="target"):
        certified_radius(net, x, y, target="second")
    with pytest.raises(ValueError, match="tol"):
        certified_radius(net, x, y, tol=0, rtol=0)
    with pytest.raises(ValueError, match="rtol"):
        certified_radius(net, x, y, rtol=-0.1)
    with pytest.raises(ValueError, match="train mode"):
        certified_radius(net.train(), x, y)
    net.eval()
    with pytest.raises(ValueError, match="eps_max"):
        certified_radius(net, x, y, eps_max=-1.0)
    with pytest.raises(ValueError, match="n_random must be an integer ≥ 1"):
        falsify_margin(net, x, y, 0.1, n_random=0)
    with pytest.raises(ValueError, match="unknown norm 1"):
        ball_outputs(net, x, 0.1, norm=1)
    with pytest.raises(ValueError, match="norm"):
        certified_radius(net, x, y, norm="l1")
    with pytest.raises(ValueError, match="method"):
        certified_radius(net, x, y, method="exact")
    with pytest.raises(ValueError, match="label"):
        certified_radius(net, x, y[:2])


def _with_pixel(x, value, sample=1):
    xb = x.clone()
    xb[sample, 0, 2, 1] = value
    return xb


def test_certified_mask_refuses_non_finite_or_unscaled_pixels(model_and_data):
    net, x, y = model_and_data
    for bad in (float("nan"), float("inf")):
        for method in ("crown-ibp", "crown"):
            with pytest.raises(ValueError, match="NaN or infinite"):
                certified_mask(net, _with_pixel(x, bad), y, 0.01, "inf", method)
    for norm in ("inf", 2):
        with pytest.raises(ValueError, match=r"outside the clip box \(0\.0, 1\.0\)"):
            certified_mask(net, x * 255, y, 0.01, norm)
    assert certified_mask(net, x, y, 0.001, "inf", "crown-ibp")[:-1].any()  # the same call on good pixels certifies


def test_certified_mask_refuses_bad_labels_or_radii(model_and_data):
    net, x, y = model_and_data
    with pytest.raises(ValueError, match="one label per sample"):
        certified_mask(net, x, y[:-1], 0.001, "inf", "crown")
    for bad in (-1, 4):  # 4 classes: a label out of range is refused, not counted as misclassified
        with pytest.raises(ValueError, match=r"6 labels in 0\.\.3"):
            certified_mask(net, x, torch.cat([y[:-1], torch.tensor([bad])]), 0.001, "inf", "crown")
        with pytest.raises(ValueError, match=r"6 labels in 0\.\.3"):
            certified_radius(net, x, torch.cat([y[:-1], torch.tensor([bad])]), "inf", "crown")
    with pytest.raises(ValueError, match=r"eps must be a number or a \(6,\) tensor"):
        certified_mask(net, x, y, torch.full((2,), 0.001), "inf", "crown")
    with pytest.raises(ValueError, match="eps must be finite and ≥ 0"):
        certified_mask(net, x, y, -0.001, "inf", "crown")
    per_image = certified_mask(net, x, y, torch.full((len(x),), 0.001), "inf", "crown")
    assert torch.equal(per_image, certified_mask(net, x, y, 0.001, "inf", "crown")) and per_image[:-1].any()


def test_certified_radius_refuses_unscaled_pixels(model_and_data):
    net, x, y = model_and_data
    for norm in ("inf", 2):
        with pytest.raises(ValueError, match=r"outside the clip box \(0\.0, 1\.0\)"):
            certified_radius(net, x * 255, y, norm, "crown-ibp")
    assert (certified_radius(net, x, y, "inf", "crown-ibp")[:-1] > 0).any()  # the same call on good pixels


def test_certified_radius_refuses_non_finite_pixels(model_and_data):
    net, x, y = model_and_data
    for bad in (float("nan"), float("inf")):
        for method in ("ibp", "crown-ibp"):
            with pytest.raises(ValueError, match="NaN or infinite"):
                certified_radius(net, _with_pixel(x, bad), y, "inf", method)


def test_certified_radius_refuses_unscaled_pixels_whatever_the_labels(model_and_data):
    net, x, _ = model_and_data
    with torch.no_grad():
        wrong = (net(x * 255).argmax(1) + 1) % 4
    with pytest.raises(ValueError, match="outside the clip box"):
        certified_radius(net, x * 255, wrong, "inf", "crown-ibp")


def test_dataset_certificates_refuse_a_train_mode_model(model_and_data):
    net, x, y = model_and_data
    net = copy.deepcopy(net).train()  # the fixture's model stays in eval mode, its BN statistics untouched
    with pytest.raises(ValueError, match="is in train mode, where BatchNorm normalises"):
        certified_mask(net, x, y, 0.001, "inf", "crown-ibp")
    with pytest.raises(ValueError, match="is in train mode, where BatchNorm normalises"):
        average_certified_bound(net, TensorData(x, y), "inf", "crown-ibp", n=2, progress=False)
    # the refusal is the mode check: the same calls on the same model in eval mode go through
    net.eval()
    assert certified_mask(net, x, y, 0.001, "inf", "crown-ibp").dtype == torch.bool
    assert len(average_certified_bound(net, TensorData(x, y), "inf", "crown-ibp", n=2, progress=False)["radii"]) == 2


def _batch_statistics_case(model_and_data):
    """A train-mode copy of the fixture's network (labels: its train-mode predictions, the last one
    wrong), its frozen twin, and its batch_statistics=True crown-ibp radii."""
    net, x, _ = model_and_data
    net = copy.deepcopy(net).train()  # the fixture's model stays in eval mode, its BN statistics untouched
    with torch.no_grad():
        y = net(x).argmax(1)
    y[-1] = (y[-1] + 1) % 4
    frozen = frozen_copy(net, x)  # the network batch_statistics=True certifies: BN frozen over the ball
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), rtol=0, atol=1e-10)  # the same network on x
        assert not torch.allclose(frozen(x), copy.deepcopy(net).eval()(x))  # ... which is not the eval-mode one
    r = certified_radius(net, x, y, "inf", "crown-ibp", eps_max=EPS_MAX["inf"], tol=TOL, batch_statistics=True)
    return net, frozen, x, y, r


def test_batch_statistics_radii_are_sound_for_the_batch_statistics_network(model_and_data):
    """certified_radius(train-mode model, batch_statistics=True) is allowed, and random points and PGD
    on the network it certifies (BatchNorm on the clean batch's statistics, held fixed over the ball)
    never reach a margin ≤ 0 within a certified radius."""
    net, frozen, x, y, r = _batch_statistics_case(model_and_data)
    assert net.training
    assert bool(torch.isfinite(r).all()) and (r >= 0).all()
    assert r[-1] == 0
    ok = r > 0
    assert ok.sum() >= 3
    assert (attack(frozen, x[ok], y[ok], r[ok], "inf") > 0).all()
    # the attack has teeth on this network: its margin is broken well beyond the radii
    assert (attack(frozen, x[ok], y[ok], (50 * r[ok]).clamp(max=1.0), "inf") <= 0).any()


def test_batch_statistics_radii_are_certified_with_the_whole_batch_statistics(model_and_data):
    """Each radius r > 0 has a positive crown-ibp margin bound on the r-ball for the network whose
    BatchNorms hold the whole batch's statistics (as the docstring promises for every radius)."""
    net, frozen, x, y, r = _batch_statistics_case(model_and_data)
    ok = r > 0
    assert ok.sum() >= 3
    with torch.no_grad():
        whole = margin_lower_bound(frozen, x, y, r, "inf", "crown-ibp")
        torch.testing.assert_close(margin_lower_bound(net, x, y, r, "inf", "crown-ibp"), whole, rtol=1e-6, atol=1e-9)
    assert (whole[ok] > 0).all(), whole


# ----------------------------------------------------------------------------- the verifier of issue 9
from rnas_lib.bounds import block_widths, margin_certificate, spec_bounds, margin_spec  # noqa: E402
from rnas_lib.verify import attack_radius, certification_gap  # noqa: E402


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("method", ["crown-forward", "alpha-crown"])
def test_linear_bound_methods_certify_soundly(model_and_data, norm, method):
    net, x, y = model_and_data
    r = certified_radius(net, x, y, norm, method, eps_max=EPS_MAX[norm], tol=TOL)
    ok = r > 0
    assert r[-1] == 0 and ok.sum() >= 3
    assert (attack(net, x[ok], y[ok], r[ok], norm) > 0).all()


def test_tighter_methods_certify_larger_radii(model_and_data):
    """ibp ≤ crown-ibp ≤ crown-forward ≤ crown ≤ alpha-crown on average (each bound is at least the
    previous one's at every ε up to relaxation choices; the bracket resolution is 1 %)."""
    net, x, y = model_and_data
    means = [certified_radius(net, x, y, "inf", m, eps_max=EPS_MAX["inf"]).mean().item()
             for m in ("ibp", "crown-ibp", "crown-forward", "crown", "alpha-crown")]
    assert all(a <= b * 1.02 for a, b in zip(means, means[1:])), means
    assert means[3] > 1.5 * means[1], means


def test_alpha_crown_never_loosens_crown(model_and_data):
    net, x, y = model_and_data
    spec = margin_spec(y, 4, dtype=x.dtype)
    with torch.no_grad():
        crown = spec_bounds(net, x, spec, 0.05, "inf", "crown")
        alpha = spec_bounds(net, x, spec, 0.05, "inf", "alpha-crown")
    assert (alpha >= crown - 1e-12).all() and (alpha > crown + 1e-6).any()


def test_l2_radii_are_computed_in_l2(model_and_data):
    """An ℓ2 ball of radius r lies inside the ℓ∞ ball of radius r, and the ℓ2 bound uses the ℓ2 dual
    norm (not the bounding box), so its radii are larger, not equal."""
    net, x, y = model_and_data
    r_inf = certified_radius(net, x, y, "inf", "crown", eps_max=EPS_MAX[2])
    r_2 = certified_radius(net, x, y, 2, "crown", eps_max=EPS_MAX[2])
    ok = r_inf > 0
    assert (r_2[ok] >= r_inf[ok] * 0.99).all() and (r_2[ok] > 1.2 * r_inf[ok]).any()


@pytest.mark.parametrize("norm", ["inf", 2])
def test_a_failed_probe_still_certifies_its_concretisation_radius(model_and_data, norm):
    """margin_certificate just above the certified radius: where the bound fails, the radius r < ε
    of its own linear bound still holds (no attack breaks it); where it holds, r = ε."""
    net, x, y = model_and_data
    eps = 1.1 * certified_radius(net, x, y, norm, "crown", eps_max=EPS_MAX[norm])[:-1]
    with torch.no_grad():
        m, r = margin_certificate(net, x[:-1], y[:-1], eps, norm, "crown")
    assert (r <= eps).all() and torch.equal(r[m > 0], eps[m > 0])
    failed = (m <= 0) & (r > 0)
    assert failed.any()
    assert (attack(net, x[:-1][failed], y[:-1][failed], r[failed], norm) > 0).all()


def test_float32_radii_are_rechecked_in_float64(monkeypatch):
    """Every radius is certified in float64 (margin > 1e-8): by the search's last probe, bounded in
    float64 where it was expected to end the search, or else by a float64 re-check at exactly that
    radius; the radii are those of the search without float64 probes, which re-checks them all."""
    from rnas_lib.certify import search

    torch.manual_seed(0)
    net = Network(PUBLISHED["DARTS_V2"], 2, 4, 3, in_channels=1, mean=[0.4], std=[0.3]).float().eval()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    with torch.no_grad():
        y = net(x).argmax(1)
    checked = []  # (sample, ε) of every float64 bound
    float64_certificates = search.float64_certificates
    monkeypatch.setattr(search, "float64_certificates", lambda model64, x, y, t, i, eps, *a: checked.extend(
        zip(i.tolist(), eps.tolist())) or float64_certificates(model64, x, y, t, i, eps, *a))
    r = certified_radius(net, x, y, "inf", "crown", eps_max=0.2)
    assert r.dtype == torch.float32 and (r > 0).all()
    probed64 = len(checked)
    monkeypatch.setattr(Bracket, "ends_if_certified", lambda self, eps: False)
    checked.clear()
    r32 = certified_radius(net, x, y, "inf", "crown", eps_max=0.2)
    assert sorted(checked) == sorted(zip(range(len(x)), r32.tolist()))  # one re-check per sample, at its radius
    assert probed64 >= len(x)
    torch.testing.assert_close(r, r32, rtol=0.01, atol=1e-6)
    net64 = Network(PUBLISHED["DARTS_V2"], 2, 4, 3, in_channels=1, mean=[0.4], std=[0.3]).double().eval()
    net64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in net.state_dict().items()})
    with torch.no_grad():
        m64, _ = margin_certificate(net64, x.double(), y, r.double() * (1 - 1e-6), "inf", "crown")
    assert (m64 > 0).all()


def test_a_refuted_float32_radius_is_searched_again_below_it(monkeypatch):
    """Where the float64 re-check of a float32 radius fails, the search goes on below it (not down to
    the failed bound's own radius): here every sample's first float64 bound is taken as failed, and
    the radii still come out within 2 % of the search's own, each certified by a float64 bound."""
    from rnas_lib.certify import search

    torch.manual_seed(0)
    net = Network(PUBLISHED["DARTS_V2"], 2, 4, 3, in_channels=1, mean=[0.4], std=[0.3]).float().eval()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    with torch.no_grad():
        y = net(x).argmax(1)
    r = certified_radius(net, x, y, "inf", "crown", eps_max=0.2)
    refuted, certified = set(), []
    float64_certificates = search.float64_certificates

    def first_fails(model64, x, y, t, i, eps, *a):
        m, rr = float64_certificates(model64, x, y, t, i, eps, *a)
        for n, b in enumerate(i.tolist()):
            if b not in refuted:  # a failure certifies nothing: conservative, so the search stays sound
                refuted.add(b)
                m[n], rr[n] = -1.0, 0.0
            elif m[n] > search.RECHECK_MARGIN:
                certified.append((b, float(eps[n])))
        return m, rr

    monkeypatch.setattr(search, "float64_certificates", first_fails)
    again = certified_radius(net, x, y, "inf", "crown", eps_max=0.2)
    assert refuted == set(range(len(x))) and (again <= r).all() and (again > 0.98 * r).all(), (again, r)
    assert all(any(b == n and e == pytest.approx(float(again[n]), rel=1e-6) for b, e in certified)
               for n in range(len(x)))


@pytest.mark.parametrize("case", ["small images", "large images", "forward mode does not fit"])
def test_full_crown_starts_from_crown_forward_only_on_small_images_where_it_fits(monkeypatch, case):
    """crown's search starts from the crown-ibp radius, refined by crown-forward's on images of at most
    FORWARD_START_MAX_INPUTS inputs where forward-mode bounds fit in FORWARD_MEMORY (on larger images a
    crown probe at a small radius costs about as much as a crown-forward one); its probes grow ×1.5
    where forward-mode bounds fit, else ×4. The radii are certificates either way."""
    from rnas_lib.certify import forward, search as search_module

    if case == "large images":
        monkeypatch.setattr(search_module, "FORWARD_START_MAX_INPUTS", 80)  # the images have 81 inputs
    if case == "forward mode does not fit":
        monkeypatch.setattr(forward, "FORWARD_MEMORY", 0)
    searched = []
    search = search_module.search
    monkeypatch.setattr(search_module, "search",
                        lambda *a, **k: searched.append((a[4].method, k["growth"])) or search(*a, **k))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).double()
    x = torch.rand(3, 1, 9, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net(x)
    net.eval()
    with torch.no_grad():
        y = net(x).argmax(1)
    r = certified_radius(net, x, y, "inf", "crown", eps_max=0.5)
    assert searched == {"small images": [("crown-ibp", 4.0), ("crown-forward", 4.0), ("crown", 1.5)],
                        "large images": [("crown-ibp", 4.0), ("crown", 1.5)],
                        "forward mode does not fit": [("crown-ibp", 4.0), ("crown", 4.0)]}[case]
    assert (r > 0).all() and (attack(net, x, y, r, "inf") > 0).all()


def test_crown_forward_bounds_as_many_images_at_once_as_fit_in_memory(monkeypatch):
    """forward_mode_images = FORWARD_MEMORY // (FORWARD_COPIES · pixels · widest node · bytes); crown-forward
    certifies (radius and mask, float32 and the float64 recheck) in groups of that many images,
    and every result is the one of the whole batch at once."""
    from rnas_lib import bounds, verify
    from rnas_lib.certify import forward, search

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).float().eval()
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    net(x)
    with torch.no_grad():
        y = net(x).argmax(1)
    per_image = 36 * 108 * 4  # pixels · widest node (3·6·6) · float32 bytes
    assert bounds.forward_mode_images(bounds.trace(net, x)) == bounds.FORWARD_MEMORY // (bounds.FORWARD_COPIES * per_image)
    whole = certified_radius(net, x, y, "inf", "crown-forward", eps_max=0.5)
    whole_mask = verify.certified_mask(net, x, y, whole * 0.9, "inf", "crown-forward")
    monkeypatch.setattr(forward, "FORWARD_MEMORY", 2 * bounds.FORWARD_COPIES * per_image)  # 2 images in float32
    sizes = []
    certificate = search.margin_certificate
    monkeypatch.setattr(search, "margin_certificate", lambda m, xs, y, eps, norm, method, *a, **k: sizes.append(
        (len(xs), xs.dtype, method)) or certificate(m, xs, y, eps, norm, method, *a, **k))
    grouped = certified_radius(net, x, y, "inf", "crown-forward", eps_max=0.5)
    forward = [(s, dt) for s, dt, method in sizes if method == "crown-forward"]
    assert {s for s, dt in forward if dt == torch.float32} == {1, 2} and {s for s, dt in forward if dt == torch.float64} == {1}
    assert torch.allclose(grouped, whole, rtol=1e-5, atol=0)
    sizes.clear()
    assert torch.equal(verify.certified_mask(net, x, y, whole * 0.9, "inf", "crown-forward"), whole_mask)
    assert max(s for s, _, _ in sizes) == 2 and whole_mask.any()


def test_pgd_radius_bounds_every_certificate_from_above(model_and_data):
    net, x, y = model_and_data
    certified = certified_radius(net, x, y, "inf", "crown", eps_max=EPS_MAX["inf"])
    attacked = attack_radius(net, x, y, "inf", eps_max=EPS_MAX["inf"], generator=torch.Generator().manual_seed(0))
    assert attacked[-1] == 0 and (attacked[:-1] > 0).all()
    assert (certified <= attacked).all()
    gap = certification_gap(certified, attacked)
    assert torch.isnan(gap[-1]) and ((gap[:-1] >= 0) & (gap[:-1] <= 1)).all()


def test_block_widths_name_every_block_and_crown_is_narrower(model_and_data):
    net, x, y = model_and_data
    rows = {m: block_widths(net, x[:3], 0.02, "inf", m) for m in ("ibp", "crown")}
    labels = [r["block"] for r in rows["crown"]]
    assert labels[0] == "stem" and labels[-1] == "logits" and len(labels) == 2 + len(net.cells)
    assert rows["crown"][0]["growth"] is None and all(r["growth"] > 0 for r in rows["crown"][1:])
    assert rows["crown"][-1]["mean_width"] < rows["ibp"][-1]["mean_width"]


# ----------------------------------------------------------------------------- the radius search
from rnas_lib.certify.radius import Bracket, power_crossing  # noqa: E402


def _run_bracket(margin, lo=0.0, eps_max=1.0, growth=2.0, rtol=0.01, tol=1e-9, clean=None):
    """Drive one Bracket against a margin function m(ε); a failed probe certifies nothing more."""
    br, probes = Bracket(lo, eps_max, growth, rtol, tol, clean), []
    while not br.done():
        p = br.next_probe()
        assert br.lo < p <= br.hi or (br.hi == eps_max and p == eps_max), (br.lo, p, br.hi)
        probes.append(p)
        br.record(p, margin(p), 0.0)
        assert len(probes) < 100
    return br, probes


@pytest.mark.parametrize("root", [3e-5, 0.0123, 0.4])
@pytest.mark.parametrize("shape", ["concave", "linear", "step"])
def test_radius_search_brackets_the_crossing_to_its_resolution(root, shape):
    """The search returns lo ≤ root < hi with hi − lo ≤ rtol·hi, for a smooth concave margin (like a
    CROWN bound's), a linear one and a step (no information in the margins: the bisection fallback);
    interpolation needs far fewer probes than plain geometric bisection would on smooth margins."""
    margin = {"concave": lambda e: 10 * (1 - (e / root) ** 2), "linear": lambda e: 5 * (root - e) / root,
              "step": lambda e: 1.0 if e <= root else -1.0}[shape]
    br, probes = _run_bracket(margin)
    assert br.lo <= root < br.hi and br.hi - br.lo <= 0.01 * br.hi, (br.lo, br.hi)
    if shape != "step":
        bisection = _run_bracket(lambda e: margin(e) if e <= root else -1.0)[1]  # margins without magnitude
        assert len(probes) < len(bisection), (probes, bisection)


@pytest.mark.parametrize("shape", ["concave", "linear", "quartic"])
def test_radius_search_grows_fast_while_the_margin_stays_near_the_clean_one(shape):
    """From a start 10⁴× below the crossing (full CROWN at 28×28 starts where crown-ibp failed, thousands
    of times below its crossing), growth ×1.5 alone needs ~23 probes to get there; knowing m(0) the
    search gets there in a few, and still brackets the crossing to its resolution, whether the drop
    grows linearly, quadratically or faster."""
    root, m0 = 0.2137, 6.0
    margin = {"concave": lambda e: m0 * (1 - (e / root) ** 2), "linear": lambda e: m0 * (1 - e / root),
              "quartic": lambda e: m0 * (1 - (e / root) ** 4)}[shape]
    blind = _run_bracket(margin, lo=2e-5, growth=1.5)[1]
    br, probes = _run_bracket(margin, lo=2e-5, growth=1.5, clean=m0)
    assert br.lo <= root < br.hi and br.hi - br.lo <= 0.01 * br.hi, (br.lo, br.hi)
    assert len(probes) <= 12 and len(probes) < len(blind) - 10, (probes, blind)


@pytest.mark.parametrize("k", [1.0, 2.3, 3.0, 4.5])
def test_power_crossing_is_exact_for_a_power_drop(k):
    """m(ε) = m₀ − c·ε^k through two probes far apart (one certified, one not) gives the crossing
    exactly; without two growing drops there is no estimate."""
    m0, root = 7.0, 0.0371
    m = lambda e: m0 * (1 - (e / root) ** k)  # noqa: E731
    a, b = (0.6 * root, m(0.6 * root)), (1.4 * root, m(1.4 * root))
    assert power_crossing(a, b, m0) == pytest.approx(root, rel=1e-12)
    assert power_crossing(b, a, m0) is None and power_crossing((0.6 * root, m0 + 1), b, m0) is None


@pytest.mark.parametrize("k", [2.3, 3.0])
def test_radius_search_brackets_a_power_drop_in_few_probes(k):
    """A margin whose drop is a power of ε (as a CROWN bound's nearly is): from a certified start
    half the crossing, the search brackets it to 1 % in at most 4 probes."""
    m0, root = 9.0, 0.0442
    br, probes = _run_bracket(lambda e: m0 * (1 - (e / root) ** k), lo=0.5 * root, growth=1.5, clean=m0)
    assert br.lo <= root < br.hi and br.hi - br.lo <= 0.01 * br.hi, (br.lo, br.hi)
    assert len(probes) <= 4, probes


def test_the_probe_that_ends_a_search_is_bounded_in_float64_and_needs_no_recheck():
    """Once bracketed, a probe below the crossing estimate that closes the bracket if certified is
    flagged for float64; a float64 margin certifies only above RECHECK_MARGIN; lo is verified only
    while a float64 certificate set it."""
    from rnas_lib.verify import RECHECK_MARGIN

    root, m0 = 0.05, 4.0
    margin = lambda e: m0 * (1 - (e / root) ** 2)  # noqa: E731
    br = Bracket(0.02, 1.0, 1.5, 0.01, 1e-9, m0)
    assert not br.ends_if_certified(br.next_probe())  # growing: nothing failed yet
    flagged = []
    while not br.done():
        p = br.next_probe()
        in64 = br.ends_if_certified(p)
        assert not in64 or (br.hi - p <= 0.01 * br.hi and p <= br.estimate)
        flagged.append(in64)
        br.record(p, margin(p), 0.0, float64=in64)
    assert any(flagged) and br.lo <= root < br.hi
    assert br.verified == (flagged[-1] and margin(br.lo) > RECHECK_MARGIN)
    br = Bracket(0.02, 1.0, 1.5, 0.01, 1e-9, m0)
    br.record(0.03, RECHECK_MARGIN / 2, 0.0, float64=True)  # positive, but not by the re-check's margin
    assert br.failed and br.hi == 0.03 and br.lo == 0.02 and not br.verified
    br.record(0.025, 1.0, 0.0, float64=True)
    assert br.lo == 0.025 and br.verified
    br.record(0.028, -1.0, 0.027, float64=False)  # a float32 failure that certifies a larger radius
    assert br.lo == 0.027 and not br.verified


def test_a_failed_float64_recheck_reopens_the_bracket_below_it():
    """A float64 bound that fails at the float32-certified lo makes it the failed end; lo falls back to
    the largest smaller probe with a positive margin, and driven on in float64 the bracket closes
    on the float64 crossing, just below the float32 one, with lo verified."""
    m0, root32, root64 = 4.0, 0.05, 0.0497
    br = Bracket(0.02, 1.0, 1.5, 0.01, 1e-9, m0)
    while not br.done():
        p = br.next_probe()
        br.record(p, m0 * (1 - (p / root32) ** 2), 0.0)
    lo32, below = br.lo, max(q for q, m in br.points if m > 0 and q < br.lo)
    assert root64 < lo32 <= root32 and not br.verified
    br.record(lo32, m0 * (1 - (lo32 / root64) ** 2), 0.0, float64=True)
    assert br.hi == lo32 and br.lo == below and not br.verified and (lo32, m0 * (1 - (lo32 / root64) ** 2)) in br.points
    for _ in range(20):
        if br.done() and br.verified:
            break
        p = br.lo if br.done() else br.next_probe()
        br.record(p, m0 * (1 - (p / root64) ** 2), 0.0, float64=True)
    assert br.verified and br.lo <= root64 < br.hi and br.hi - br.lo <= 0.01 * br.hi, (br.lo, br.hi)


def test_float64_radii_are_rounded_down_to_float32():
    """A radius certified in float64 is reported in the sample's dtype, never above the certified value."""
    from rnas_lib.certify.search import round_down

    r = torch.tensor([0.1, 1 / 3, 2.0**-20, 0.0, 0.0123456789], dtype=torch.float64)
    r32 = round_down(r, torch.float32)
    assert r32.dtype == torch.float32 and (r32.double() <= r).all()
    assert (r - r32.double() <= r * 2.0**-23).all()  # the nearest float32 at or below r
    assert r32[2] == 2.0**-20 and r32[3] == 0
    assert torch.equal(round_down(r, torch.float64), r)


def test_with_nothing_certified_the_search_starts_where_a_cheaper_bound_failed():
    """A tight bound's search over a sample that no cheaper bound certified starts at the smallest
    radius the cheaper one failed at (probes at small radii are cheap; eps_max/1024 can cost hours
    at 28×28), never above eps_max/1024, and still brackets a crossing above or below its start."""
    assert Bracket(0.0, 1.0, 4.0, 0.01, 1e-9, 5.0).next_probe() == 1 / 1024
    assert Bracket(0.0, 1.0, 4.0, 0.01, 1e-9, 5.0, first=3e-6).next_probe() == 3e-6
    assert Bracket(0.0, 1.0, 4.0, 0.01, 1e-9, 5.0, first=0.5).next_probe() == 1 / 1024
    assert Bracket(0.2, 1.0, 4.0, 0.01, 1e-9, 5.0, first=3e-6).next_probe() == pytest.approx(0.3)
    for root in (4e-5, 7e-7):
        br = Bracket(0.0, 1.0, 4.0, 0.01, 1e-9, 5.0, first=3e-6)
        probes = []
        while not br.done():
            probes.append(br.next_probe())
            br.record(probes[-1], 5.0 * (1 - (probes[-1] / root) ** 2), 0.0)
        assert probes[0] == 3e-6 and max(probes) < 1e-3 and br.lo <= root < br.hi, (root, probes)


def test_radius_search_from_a_certified_start_and_at_the_cap():
    br, probes = _run_bracket(lambda e: 0.02 - e, lo=0.015)
    assert probes[0] == pytest.approx(1.5 * 0.015) and 0.0198 <= br.lo <= 0.02 < br.hi
    br, _ = _run_bracket(lambda e: 1.0, lo=0.3)  # certified everywhere: the cap eps_max
    assert br.lo == 1.0


@pytest.mark.parametrize("method", ["crown-ibp", "crown"])
def test_worker_processes_certify_the_same_radii_in_batch_order(model_and_data, method):
    """workers=2 splits the batch into chunks certified by two processes: the radii come back in
    batch order, for the same (seeded, drawn once) random targets, and agree with one process's to
    the bracket's resolution; each is a certificate."""
    net, x, y = model_and_data
    kw = dict(norm="inf", method=method, target="random", eps_max=EPS_MAX["inf"], tol=TOL)
    r1 = certified_radius(net, x, y, generator=torch.Generator().manual_seed(3), **kw)
    r2 = certified_radius(net, x, y, generator=torch.Generator().manual_seed(3), workers=2, **kw)
    assert r2[-1] == 0 and (r2[:-1] > 0).all()
    assert r1[:-1].max() > 2 * r1[:-1].min()  # radii far apart: an order mix-up fails the comparison
    torch.testing.assert_close(r2, r1, rtol=0.01, atol=TOL)
    targets = target_classes(net(x), y, "random", torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (margin_lower_bound(net, x, y, r2, "inf", method, targets)[:-1] > 0).all()


def test_worker_processes_give_the_same_certified_mask(model_and_data):
    net, x, y = model_and_data
    r = certified_radius(net, x, y, "inf", "crown", eps_max=EPS_MAX["inf"], tol=TOL)
    eps = float(r[:-1].median())
    m1 = certified_mask(net, x, y, eps, "inf", "crown")
    m2 = certified_mask(net, x, y, eps, "inf", "crown", workers=2)
    assert m1.tolist() == m2.tolist() and 0 < int(m1.sum()) < len(x) - 1


def test_workers_are_checked_and_refused_where_no_process_can_start(model_and_data, monkeypatch):
    net, x, y = model_and_data
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers must be a positive integer"):
            certified_radius(net, x, y, workers=bad)
        with pytest.raises(ValueError, match="workers must be a positive integer"):
            certified_mask(net, x, y, 0.01, workers=bad)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="alpha_steps must be an integer ≥ 1"):
            certified_mask(net, x, y, 0.01, method="alpha-crown", alpha_steps=bad)
        with pytest.raises(ValueError, match="alpha_steps must be an integer ≥ 1"):
            certified_radius(net, x, y, method="alpha-crown", alpha_steps=bad)
    assert parallel.check_workers(-1) == parallel.usable_cores() >= 1
    with pytest.raises(ValueError, match=r"on \['meta'\]: pass workers=1"):
        parallel.in_processes(lambda t: t, (torch.empty(4, device="meta"),), 4, 2)
    monkeypatch.setattr(parallel.multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    with pytest.raises(RuntimeError, match="daemonic process .* pass workers=1"):
        certified_radius(net, x, y, "inf", "crown-ibp", workers=2)
    assert (certified_radius(net, x, y, "inf", "crown-ibp", eps_max=EPS_MAX["inf"], workers=1)[:-1] > 0).all()
