"""rnas_lib.certified_training: the worst-case loss against an independent interval computation, its
gradient against finite differences, ε = 0, the schedules, and certified-trained networks whose
certificates hold against attacks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnas_lib.attacks import pgd
from rnas_lib.certified_training import (CertifiedSchedule, certified_loss, certified_margins, certified_settings,
                                         worst_case_logits)
from rnas_lib.data import load_dataset
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.network import Network
from rnas_lib.train import TrainConfig, run_training
from rnas_lib.verify import certified_radius, falsify_margin


def test_worst_case_logits_put_zero_at_the_label_and_minus_the_margins_elsewhere():
    margins = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = torch.tensor([0, 2])
    assert torch.equal(worst_case_logits(margins, y), torch.tensor([[0.0, -1, -2, -3], [-4, -5, 0, -6]]))


def hand_ibp_margins(net, x, y, eps):
    """IBP by hand on Flatten → Linear → ReLU → Linear, the ball clipped to [0, 1]; the last affine map
    applied to the margin rows e_y − e_t themselves (as rnas's IBP margin does)."""
    lin1, lin2 = net[1], net[3]
    lo, hi = (x - eps).clamp(0, 1).flatten(1), (x + eps).clamp(0, 1).flatten(1)
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    c1, r1 = center @ lin1.weight.T + lin1.bias, radius @ lin1.weight.abs().T
    h_lo, h_hi = (c1 - r1).clamp_min(0), (c1 + r1).clamp_min(0)
    rows = []
    for b in range(len(x)):
        per_class = []
        for t in range(lin2.out_features):
            if t == y[b]:
                continue
            w = lin2.weight[y[b]] - lin2.weight[t]
            hc, hr = (h_hi[b] + h_lo[b]) / 2, (h_hi[b] - h_lo[b]) / 2
            per_class.append(w @ hc - w.abs() @ hr + lin2.bias[y[b]] - lin2.bias[t])
        rows.append(torch.stack(per_class))
    return torch.stack(rows)


def test_ibp_margins_and_the_loss_on_them_match_an_independent_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).double()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 3])
    eps = 0.07
    margins = certified_margins(net, x, y, eps, "inf", "ibp", beta=1.0)
    expected = hand_ibp_margins(net, x, y, eps)
    assert torch.allclose(margins, expected, atol=1e-12)
    worst = torch.stack([torch.cat([expected[b, :y[b]], torch.zeros(1, dtype=x.dtype), expected[b, y[b]:]])
                         for b in range(len(y))])
    assert torch.allclose(F.cross_entropy(-worst, y), F.cross_entropy(worst_case_logits(margins, y), y))


def small_network(dtype=torch.float64):
    torch.manual_seed(1)
    net = Network(PUBLISHED["DARTS_V2"], 2, 4, 2, in_channels=1, mean=[0.4], std=[0.3]).to(dtype).train()
    x = torch.rand(6, 1, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    return net, x, y


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_the_loss_is_the_cross_entropy_of_the_worst_case_logits_and_bounds_the_ball(method):
    """κ = 0: the loss is CE of the worst-case logits, which is at least the CE at every sampled point
    of the ball (BatchNorm with the clean batch's statistics, as the bound holds them)."""
    net, x, y = small_network()
    eps = 0.05
    logits = net(x)
    loss = certified_loss(net, x, y, F.cross_entropy(logits, y), eps, "inf", method, kappa=0.0, beta=1.0)
    margins = certified_margins(net, x, y, eps, "inf", method, beta=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(worst_case_logits(margins, y), y).item(), rel=1e-12)
    layers, means, variances = _batch_statistics(net, x)
    frozen = net.eval()
    with torch.no_grad():
        for m, mean, var in zip(layers, means, variances):
            m.running_mean, m.running_var = mean, var
        assert torch.allclose(frozen(x), logits)  # the clean batch's statistics, now fixed
        gen = torch.Generator().manual_seed(3)
        for _ in range(20):
            x_near = (x + eps * (2 * torch.rand(x.shape, dtype=x.dtype, generator=gen) - 1)).clamp(0, 1)
            sampled = F.cross_entropy(frozen(x_near), y, reduction="none")
            worst = F.cross_entropy(worst_case_logits(margins, y), y, reduction="none")
            assert (sampled <= worst + 1e-9).all()


def _batch_statistics(net, x):
    """The BatchNorms of ``net`` and the mean and biased variance of their inputs on x (train mode)."""
    layers, means, variances, hooks = [], [], [], []

    def record(module, inputs, output):
        means.append(inputs[0].mean((0, 2, 3)))
        variances.append(inputs[0].var((0, 2, 3), unbiased=False))

    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            layers.append(m)
            hooks.append(m.register_forward_hook(record))
    net.train()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return layers, means, variances


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_at_eps_zero_the_certified_loss_is_the_natural_loss(method):
    net, x, y = small_network()
    natural = F.cross_entropy(net(x), y)
    loss = certified_loss(net, x, y, natural, 0.0, "inf", method, kappa=0.0, beta=0.5)
    assert loss.item() == pytest.approx(natural.item(), rel=1e-10)


@pytest.mark.parametrize("method, beta", [("ibp", 1.0), ("crown-ibp", 1.0), ("crown-ibp", 0.3)])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_gradient_of_the_loss_matches_finite_differences(method, beta, batch):
    """∂L/∂W of the stem convolution and of the classifier, L the κ = 0.5 mix in train mode, in float64."""
    net, x, y = small_network()
    x, y = x[:batch], y[:batch]
    names = ("stem.0.weight", "classifier.weight")

    def loss_of(*weights):
        return _loss_with(net, dict(zip(names, weights)), x, y, method, beta)

    inputs = tuple(net.get_parameter(n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def _loss_with(net, values, x, y, method, beta):
    originals = {}
    for name, value in values.items():
        module, attr = net.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
        originals[name] = getattr(module, attr)
        delattr(module, attr)
        setattr(module, attr, value)
    try:
        return certified_loss(net, x, y, F.cross_entropy(net(x), y), 0.03, "inf", method, kappa=0.5, beta=beta)
    finally:
        for name, original in originals.items():
            module, attr = net.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]
            delattr(module, attr)
            module.register_parameter(attr, original)


def test_the_schedule_warms_up_ramps_and_holds():
    settings = certified_settings({"eps": 0.2, "warmup_epochs": 1, "ramp_epochs": 2, "kappa_end": 0.5}, epochs=5)
    schedule = CertifiedSchedule(settings, steps_per_epoch=10)
    assert schedule.at(0) == (0.0, 1.0, 1.0) and schedule.at(9) == (0.0, 1.0, 1.0)
    eps, kappa, beta = schedule.at(20)  # halfway through the ramp
    assert eps == pytest.approx(0.1) and kappa == pytest.approx(0.75) and beta == pytest.approx(0.5)
    assert schedule.at(30) == schedule.at(49) == (0.2, 0.5, 0.0)
    smooth = CertifiedSchedule({**settings, "ramp": "smooth"}, 10)
    assert smooth.at(20)[0] == pytest.approx(0.1) and smooth.at(12)[0] < schedule.at(12)[0]
    assert certified_settings({"eps": 0.1}, epochs=10)["ramp_epochs"] == 5


@pytest.mark.parametrize("settings, message", [
    ({"method": "crown"}, "certified must be None or a dict with at least 'eps'"),
    ({"eps": 0.1, "method": "crown"}, "not a training bound"),
    ({"eps": -0.1}, "eps must be a number"),
    ({"eps": 0.1, "warmup_epochs": 4}, "warmup_epochs must be an integer in 0..3"),
    ({"eps": 0.1, "ramp_epochs": 5}, "ramp_epochs must be an integer in 1..4"),
    ({"eps": 0.1, "kappa_end": 2}, "kappa_end must be in"),
    ({"eps": 0.1, "ramp": "cosine"}, "ramp 'cosine' unknown"),
    ({"eps": 0.1, "mix": 0.5}, "no settings"),
])
def test_bad_certified_settings_name_the_problem(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(epochs=4, certified=settings)


def test_certified_and_adversarial_training_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(epochs=4, certified={"eps": 0.1}, adversarial={"eps": 0.1})


TINY = dict(train_C=4, train_layers=2, train_limit=512, test_limit=64, batch_size=32, epochs=6)


def test_a_certified_trained_network_holds_its_certificates_and_resumes_exactly(tmp_path, interrupt_after_first_epoch):
    """Certified training (CROWN-IBP at ε = 0.05, ramped over 3 of 6 epochs): the crown-ibp radii of its test digits hold against
    random points and PGD, and it certifies more than the same network trained the standard way; a
    training interrupted after its first epoch and resumed ends with the same weights."""
    certified = {"eps": 0.05, "method": "crown-ibp", "ramp_epochs": 3}
    whole = run_training("DARTS_V2", "smoke", 0, out_dir=tmp_path / "w", progress=False,
                         certified=certified, **TINY)
    assert [h["certified"]["eps"] for h in whole.history][-1] == pytest.approx(0.05)
    standard = run_training("DARTS_V2", "smoke", 0, out_dir=tmp_path / "s", progress=False, **TINY)
    test = load_dataset("digits", False, limit=24)
    net = whole.model.eval()
    r = certified_radius(net, test.x, test.y, "inf", "crown-ibp", eps_max=0.5, tol=1e-3)
    r_standard = certified_radius(standard.model.eval(), test.x, test.y, "inf", "crown-ibp", eps_max=0.5, tol=1e-3)
    assert r.mean() > r_standard.mean()
    ok = r > 0
    assert ok.sum() >= 4
    gen = torch.Generator().manual_seed(0)
    assert (falsify_margin(net, test.x[ok], test.y[ok], r[ok], "inf", n_random=64, steps=30, generator=gen) > 0).all()
    x_adv = pgd(net, test.x[ok], test.y[ok], r[ok], "inf", steps=30, restarts=2, generator=gen)
    with torch.no_grad():
        assert (net(x_adv).argmax(1) == test.y[ok]).all()

    interrupt_after_first_epoch("DARTS_V2", "smoke", 0, out_dir=tmp_path / "c", progress=False, certified=certified,
                                **TINY)
    resumed = run_training("DARTS_V2", "smoke", 0, out_dir=tmp_path / "c", progress=False,
                           certified=certified, **TINY)
    assert [h["certified"] for h in resumed.history] == [h["certified"] for h in whole.history]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not math.isnan(resumed.test_acc)
