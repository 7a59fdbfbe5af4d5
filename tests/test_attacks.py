"""Attacks: rnas's PGD against the toolbox's PGD, the ordering clean ≥ FGSM ≥ PGD, the threat model
(ε-ball, [0, 1]), worst case over restarts, eval mode restored, clear errors, adversarial training."""
import numpy as np
import pytest
import torch

from rnas_lib import attacks
from rnas_lib.attacks import evaluate, fgsm, pgd
from rnas_lib.data import TensorData, load_dataset
from rnas_lib.genotypes import PUBLISHED
from rnas_lib import train as train_mod
from rnas_lib.train import TrainConfig, build_network, train_network

EPS = {"inf": 0.1, 2: 0.5}
# one worker runs the module, so the session fixtures below train and attack the network once, not once per worker
pytestmark = pytest.mark.xdist_group("attacks")


@pytest.fixture(scope="session")
def trained():
    """A smoke-size DARTS_V2 network trained on 900 digits; the 897 images it never saw (the 360 test
    images and the rest of the training split) to attack."""
    torch.manual_seed(0)
    train = load_dataset("digits", True)
    test = load_dataset("digits", False)
    held = TensorData(torch.cat([test.x, train.x[900:]]), torch.cat([test.y, train.y[900:]]))
    net = build_network(PUBLISHED["DARTS_V2"], "smoke")
    train_network(net, train.subset(slice(0, 900)), test, TrainConfig(epochs=6), progress=False)
    return net.eval(), held


@pytest.fixture(scope="session")
def pgd_accuracy(trained):
    """Robust accuracy of rnas's PGD-10 (one random start) per norm on the 897 held-out images."""
    net, data = trained
    torch.manual_seed(1)
    return {norm: _accuracy(net, pgd(net, data.x, data.y, EPS[norm], norm, steps=10), data.y) for norm in EPS}


def _accuracy(net, x, y):
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_agrees_with_the_toolbox(trained, pgd_accuracy, norm):
    from art.attacks.evasion import ProjectedGradientDescent

    net, data = trained
    assert len(data) >= 500
    eps = EPS[norm]
    np.random.seed(1)
    art_pgd = ProjectedGradientDescent(attacks.art_classifier(net, data.x), norm=np.inf if norm == "inf" else 2,
                                       eps=eps, eps_step=2.5 * eps / 10, max_iter=10, num_random_init=1,
                                       batch_size=256, verbose=False)
    x_art = torch.from_numpy(art_pgd.generate(data.x.numpy(), data.y.numpy()))
    ours, theirs = pgd_accuracy[norm], _accuracy(net, x_art, data.y)
    clean = _accuracy(net, data.x, data.y)
    assert ours < clean - 0.2, "the attack should matter at this ε, or the comparison says nothing"
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_pgd_is_stronger_than_fgsm_which_is_stronger_than_nothing(trained, pgd_accuracy, norm):
    net, data = trained
    clean = _accuracy(net, data.x, data.y)
    one_step = _accuracy(net, fgsm(net, data.x, data.y, EPS[norm], norm), data.y)
    assert pgd_accuracy[norm] <= one_step <= clean
    assert pgd_accuracy[norm] < one_step  # strictly: ten steps beat one on a trained net


@pytest.mark.parametrize("norm", ["inf", 2])
def test_one_pgd_step_of_size_eps_from_x_is_fgsm(trained, norm):
    net, data = trained
    x, y = data.x[:64], data.y[:64]
    step = pgd(net, x, y, EPS[norm], norm, steps=1, step_size=EPS[norm], random_start=False)
    torch.testing.assert_close(step, fgsm(net, x, y, EPS[norm], norm))


def test_the_gradient_is_the_loss_gradient(trained):
    """FGSM's direction from torch.func.grad of the per-sample loss, computed independently."""
    net, data = trained
    x, y = data.x[:8], data.y[:8]

    def loss(xi, yi):
        return torch.nn.functional.cross_entropy(net(xi[None]), yi[None])

    g = torch.stack([torch.func.grad(loss)(xi, yi) for xi, yi in zip(x, y)])
    expected = (x + 0.05 * g.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(net, x, y, 0.05, "inf"), expected)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_adversarial_examples_stay_in_the_ball_and_the_box(trained, norm):
    net, data = trained
    x, y = data.x[:32], data.y[:32]
    eps = EPS[norm]
    examples = {
        "fgsm": fgsm(net, x, y, eps, norm),
        "pgd": pgd(net, x, y, eps, norm, steps=5, restarts=2),
        "pgd, large steps": pgd(net, x, y, eps, norm, steps=3, step_size=4 * eps),
        "autoattack": attacks.autoattack(net, x, y, eps, norm, steps=5, components=["apgd-ce", "apgd-dlr"]),
    }
    for name, x_adv in examples.items():
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
        assert bool((size <= eps * (1 + 1e-5)).all()), (name, size.max().item())
        assert x_adv.min() >= 0 and x_adv.max() <= 1, name
        assert size.max() > 0.5 * eps, f"{name} did not move"


def test_restarts_keep_the_worst_case_per_sample(trained):
    net, data = trained
    x, y = data.x[:64], data.y[:64]
    one = pgd(net, x, y, 0.08, "inf", steps=3, restarts=1, generator=torch.Generator().manual_seed(5))
    three = pgd(net, x, y, 0.08, "inf", steps=3, restarts=3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        l1, l3 = net(one), net(three)
    wrong1, wrong3 = l1.argmax(1) != y, l3.argmax(1) != y
    assert bool((wrong3 >= wrong1).all())
    both_right = ~wrong1 & ~wrong3
    ce = torch.nn.functional.cross_entropy
    assert bool((ce(l3, y, reduction="none") >= ce(l1, y, reduction="none") - 1e-6)[both_right].all())


def test_attacks_use_eval_mode_and_restore_the_mode(trained):
    net, data = trained
    stats = net.stem[1].running_mean.clone()
    net.train()
    try:
        pgd(net, data.x[:16], data.y[:16], 0.1, "inf", steps=2)
        assert net.training and all(m.training for m in net.modules())
        assert torch.equal(net.stem[1].running_mean, stats), "an attack updated BatchNorm statistics"
    finally:
        net.eval()


def test_evaluate_records(trained):
    net, data = trained
    records = evaluate(net, data, ["fgsm", {"name": "pgd", "steps": 3}], [0.0, 0.1], limit=100, progress=False)
    assert [(r["attack"], r["eps"]) for r in records] == [("fgsm", 0.0), ("fgsm", 0.1), ("pgd", 0.0), ("pgd", 0.1)]
    clean = _accuracy(net, data.x[:100], data.y[:100])
    assert records[0]["accuracy"] == pytest.approx(clean) and records[2]["accuracy"] == pytest.approx(clean)
    assert records[3]["accuracy"] <= records[1]["accuracy"] < clean
    pgd_record = records[3]
    assert pgd_record["steps"] == 3 and pgd_record["step_size"] == pytest.approx(2.5 * 0.1 / 3)
    assert pgd_record["n"] == 100 and pgd_record["norm"] == "inf" and pgd_record["restarts"] == 1


def test_carlini_wagner_is_scored_as_a_minimum_norm_attack(trained):
    """One C&W run serves every ε: robust at ε ⇔ still correct or farther than ε; ℓ2 = 100 holds every example."""
    net, data = trained
    x, y = data.x[:16], data.y[:16]
    torch.manual_seed(3)
    cw = evaluate(net, data, [{"name": "cw", "steps": 5, "binary_search_steps": 2}], [0.0, 0.5, 100.0], norm=2,
                  limit=16, progress=False)
    accuracies = [r["accuracy"] for r in cw]
    assert [r["eps"] for r in cw] == [0.0, 0.5, 100.0] and all(r["norm"] == 2 for r in cw)
    assert accuracies[0] == pytest.approx(_accuracy(net, x, y))
    assert accuracies[0] >= accuracies[1] >= accuracies[2] and accuracies[0] > accuracies[2]
    x_adv = attacks.carlini_wagner_l2(net, x, y, steps=5, binary_search_steps=2)  # deterministic: no random start
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        unbroken = (net(x_adv).argmax(1) == y) & (net(x).argmax(1) == y)
    assert accuracies[2] == pytest.approx(unbroken.float().mean().item())
    assert accuracies[2] <= 0.25, "C&W should break most digits at some ℓ2 distance"


def test_bad_attack_parameters_raise_clear_errors(trained):
    net, data = trained
    x, y = data.x[:4], data.y[:4]
    with pytest.raises(ValueError, match="eps must be finite and ≥ 0"):
        pgd(net, x, y, -0.1)
    with pytest.raises(ValueError, match="unknown norm 1"):
        fgsm(net, x, y, 0.1, norm=1)
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1"):
        pgd(net, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="restarts must be an integer ≥ 1"):
        pgd(net, x, y, 0.1, restarts=0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        pgd(net, x, y, 0.1, step_size=-1.0)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        pgd(net, x * 255, y, 0.1)
    with pytest.raises(ValueError, match="unknown attack 'deepfool'"):
        evaluate(net, data, ["deepfool"], [0.1])
    with pytest.raises(ValueError, match="has no settings"):
        evaluate(net, data, [{"name": "pgd", "iterations": 10}], [0.1])
    with pytest.raises(ValueError, match="eps_grid"):
        evaluate(net, data, ["pgd"], [-0.1])
    with pytest.raises(ValueError, match="ℓ2"):
        evaluate(net, data, ["cw"], [0.1], norm="inf")
    with pytest.raises(ValueError, match="unknown AutoAttack components"):
        attacks.autoattack(net, x, y, 0.1, components=["fab"])


def test_adversarial_training_makes_pgd_weaker(tmp_path):
    """Madry training at ε = 0.1 (ℓ∞) gives higher PGD accuracy than standard training, same budget."""
    train, test = load_dataset("digits", True, limit=600), load_dataset("digits", False)
    acc = {}
    for adversarial in (None, {"eps": 0.1, "steps": 3}):
        torch.manual_seed(0)
        net = build_network(PUBLISHED["DARTS_V2"], "smoke", C=4)
        train_network(net, train, test, TrainConfig(epochs=4, adversarial=adversarial), progress=False)
        torch.manual_seed(1)
        acc[adversarial is not None] = _accuracy(net, pgd(net, test.x, test.y, 0.1, steps=10), test.y)
    assert acc[True] > acc[False] + 0.1, acc


def test_adversarial_training_settings():
    config = TrainConfig(epochs=2, adversarial={"eps": 0.1, "norm": "l2"})
    assert config.adversarial == {"eps": 0.1, "norm": 2, "steps": 7, "step_size": None, "random_start": True}
    for bad, match in (({"norm": 2}, "at least 'eps'"), ({"eps": -1}, "eps must be a number > 0"),
                       ({"eps": 0.1, "steps": 0}, "steps must be an integer ≥ 1"),
                       ({"eps": 0.1, "norm": 3}, "unknown norm 3"), ({"eps": 0.1, "iters": 3}, "no settings")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(adversarial=bad)


def test_adversarial_training_resumes_exactly(tmp_path, monkeypatch):
    """Stopped after epoch 1 and resumed, adversarial training (random starts included) repeats itself."""
    train, test = load_dataset("digits", True, limit=128), load_dataset("digits", False, limit=64)
    config = TrainConfig(epochs=2, adversarial={"eps": 0.1, "steps": 2})

    def fresh():
        torch.manual_seed(0)
        return build_network(PUBLISHED["DARTS_V2"], "smoke", C=4)

    whole = train_network(fresh(), train, test, config, tmp_path / "w", progress=False)
    real, calls = train_mod.save_checkpoint, []

    def save_then_die(*args):
        real(*args)
        calls.append(1)
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_network(fresh(), train, test, config, tmp_path / "c", progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    with pytest.raises(ValueError, match="another configuration"):  # standard training cannot resume it
        train_network(fresh(), train, test, TrainConfig(epochs=2), tmp_path / "c", progress=False)
    resumed = train_network(fresh(), train, test, config, tmp_path / "c", progress=False)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]


def test_the_epsilon_explorer_builds_and_follows_its_controls(trained):
    import matplotlib

    matplotlib.use("Agg")
    from rnas_lib.widgets import AttackExplorer

    net, data = trained
    explorer = AttackExplorer(net, data, index=3, eps=0.1, eps_max=0.3, steps=3)
    first = bytes(explorer.image.value)
    assert first.startswith(b"\x89PNG"), "the first view is drawn at build time"
    explorer.norm.value = 2  # ℓ2: range and ε scaled by l2_scale
    assert explorer.eps.max == pytest.approx(1.5) and explorer.eps.value == pytest.approx(0.5)
    assert bytes(explorer.image.value) != first
    x_adv = explorer.adversarial(0.5, 3, 2, "pgd")
    assert float((x_adv - data.x[3:4]).flatten().norm()) <= 0.5 + 1e-5
    with pytest.raises(ValueError, match="index must be in"):
        AttackExplorer(net, data, index=len(data))


@pytest.mark.parametrize("bad, message", [
    (lambda x: x * 255, r"pixels in \[0, 1\].*got values in \[\d.*divide 0–255 images by 255"),  # 0–255 images
    (lambda x: (x - 0.5) / 0.25, r"pixels in \[0, 1\].*before any normalisation"),  # already normalised
    (lambda x: x.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([2]), torch.tensor([3])),
                           torch.tensor(float("nan"))), r"1 non-finite value.*index \(1, 0, 2, 3\)"),
    (lambda x: torch.full_like(x, float("inf")), r"non-finite"),
    (lambda x: x[0], r"\(B, C, H, W\) tensor"),
])
def test_images_outside_the_clip_box_or_not_finite_are_refused(bad, message):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(2, 1, 4, 4) * 0.98 + 0.01, torch.tensor([0, 1])
    assert attacks.check_images(x) is x
    with pytest.raises(ValueError, match=message):
        attacks.check_images(bad(x))
    for attack in (lambda x: fgsm(model, x, y, 0.1), lambda x: pgd(model, x, y, 0.1, steps=2)):
        with pytest.raises(ValueError, match=message):
            attack(bad(x))


def test_check_images_takes_other_clip_boxes():
    x = torch.full((1, 1, 2, 2), 200.0)
    assert attacks.check_images(x, clip=(0, 255)) is x
    with pytest.raises(ValueError, match=r"in \[0, 1\].*got values in \[200, 200\]"):
        attacks.check_images(x)
    with pytest.raises(ValueError, match="clip box must be two finite numbers"):
        attacks.check_images(x, clip=(1, 0))


@pytest.mark.parametrize("norm, q", [("inf", 1), ("linf", 1), ("Linf", 1), (float("inf"), 1), (2, 2), ("2", 2),
                                     ("l2", 2)])
def test_dual_norm_accepts_every_spelling_check_norm_accepts(norm, q):
    from rnas_lib.jacobian import dual_norm

    assert attacks.check_norm(norm) in ("inf", 2)
    assert dual_norm(norm) == q
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        dual_norm("l1")
