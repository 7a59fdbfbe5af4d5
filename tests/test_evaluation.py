"""Attack against certificate on the same networks: a certificate that an attack breaks is a bug.
Certified accuracy ≤ PGD accuracy at every ε on every network evaluated, PGD at each image's own
certified radius never flips it, and the dataset-level records are consistent and JSON-ready."""
import json

import pytest
import torch

from rnas_lib.attacks import evaluate, pgd
from rnas_lib.data import load_dataset
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.train import TrainConfig, build_network, train_network
from rnas_lib.verify import TARGETS, average_certified_bound, certified_accuracy, certified_mask, certified_radius

# one worker runs the module, so the module fixture below trains its networks once, not once per worker
pytestmark = pytest.mark.xdist_group("evaluation")
N = 48
EPS_GRID = {"inf": [0.0, 1e-4, 3e-4, 1e-3, 0.01, 0.05], 2: [0.0, 1e-4, 3e-4, 1e-3, 0.05, 0.3]}


@pytest.fixture(scope="module")
def networks():
    """Three networks: untrained, and two trained briefly (standard; PGD adversarial training, which
    gives larger certified radii) — small C so that bounds stay cheap."""
    train, test = load_dataset("digits", True, limit=500), load_dataset("digits", False)
    nets = {}
    for name, adversarial in (("untrained", None), ("standard", None), ("adversarial", {"eps": 0.02, "steps": 2})):
        torch.manual_seed(0)
        net = build_network(PUBLISHED["DARTS_V2"], "smoke", C=4)
        if name != "untrained":
            train_network(net, train, test, TrainConfig(epochs=3, adversarial=adversarial), progress=False)
        nets[name] = net.eval()
    return nets, test.subset(slice(0, N))


@pytest.mark.parametrize("norm", ["inf", 2])
def test_certified_accuracy_never_exceeds_pgd_accuracy(networks, norm):
    nets, data = networks
    for name, net in nets.items():
        attacked = {r["eps"]: r["accuracy"] for r in
                    evaluate(net, data, [{"name": "pgd", "steps": 10, "restarts": 2}], EPS_GRID[norm], norm=norm,
                             progress=False)}
        for eps in EPS_GRID[norm]:
            cert = certified_accuracy(net, data, eps, norm, "crown-ibp")
            assert cert <= attacked[eps], (name, norm, eps, cert, attacked[eps])
        clean = attacked[0.0]
        assert certified_accuracy(net, data, 0.0, norm) == pytest.approx(clean)  # ε = 0: certified ⇔ correct


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_at_each_certified_radius_flips_nothing(networks, norm):
    """The strongest per-sample check: attack every certified image at exactly its own radius."""
    nets, data = networks
    net = nets["adversarial"]
    radius = certified_radius(net, data.x, data.y, norm, "crown-ibp", eps_max=0.05 if norm == "inf" else 0.3,
                              tol=1e-6)
    ok = radius > 0
    assert ok.sum() >= N // 4, "too few certified images for the check to mean anything"
    torch.manual_seed(0)
    x_adv = pgd(net, data.x[ok], data.y[ok], radius[ok], norm, steps=20, restarts=3)
    with torch.no_grad():
        assert bool((net(x_adv).argmax(1) == data.y[ok]).all())
    # the attack has teeth on these very images: at a radius far beyond the certificates it breaks some
    x_far = pgd(net, data.x[ok], data.y[ok], 0.15 if norm == "inf" else 1.5, norm, steps=20)
    with torch.no_grad():
        assert bool((net(x_far).argmax(1) != data.y[ok]).any())


def test_certified_mask_is_correct_and_positive_margin(networks):
    nets, data = networks
    net = nets["standard"]
    from rnas_lib.bounds import margin_lower_bound

    mask = certified_mask(net, data.x, data.y, 2e-4, "inf", "ibp")
    with torch.no_grad():
        correct = net(data.x).argmax(1) == data.y
    expected = correct & (margin_lower_bound(net, data.x, data.y, 2e-4, "inf", "ibp") > 0)
    assert torch.equal(mask, expected)
    assert certified_accuracy(net, data, 2e-4, "inf", "ibp", batch_size=7) == pytest.approx(expected.float().mean().item())


def test_average_certified_bound_records(networks):
    nets, data = networks
    net = nets["adversarial"]
    records = {t: average_certified_bound(net, data, "inf", "crown-ibp", t, n=24, eps_max=0.05, tol=1e-4,
                                          batch_size=10, progress=False) for t in TARGETS}
    json.dumps(records, allow_nan=False)
    untargeted = records["untargeted"]
    radii = torch.tensor(untargeted["radii"])
    assert untargeted["n"] == 24 == len(radii)
    assert untargeted["mean_radius"] == pytest.approx(radii.mean().item())
    direct = certified_radius(net, data.x[:24], data.y[:24], "inf", "crown-ibp", eps_max=0.05, tol=1e-4)
    torch.testing.assert_close(radii, direct, rtol=0, atol=1e-7)
    # one target is an easier property than all of them: its radius is at least the untargeted one
    for t in TARGETS[1:]:
        assert records[t]["mean_radius"] >= untargeted["mean_radius"] - 1e-4, t
    with torch.no_grad():
        correct = net(data.x[:24]).argmax(1) == data.y[:24]
    assert correct.any() and not correct.all(), "both kinds of image are needed for this check"
    assert (radii[~correct] == 0).all()  # a misclassified image has no certified radius
    assert untargeted["mean_radius_correct"] == pytest.approx(radii[correct].mean().item())
    assert untargeted["clean_accuracy"] == pytest.approx(correct.float().mean().item())
    with pytest.raises(ValueError, match="n must be a positive integer"):
        average_certified_bound(net, data, n=0, progress=False)
    with pytest.raises(ValueError, match="eps must be finite and ≥ 0"):
        certified_accuracy(net, data, -0.1)
