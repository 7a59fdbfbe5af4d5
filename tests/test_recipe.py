"""DARTS' retraining recipe: augmentation (random crop, flip, cutout), the auxiliary head (training
loss only), the drop-path schedule, and the tiers' recipe defaults."""
import pytest
import torch
import torch.nn.functional as F

from rnas_lib import train as train_mod
from rnas_lib.augment import augment, cutout, random_crop, random_flip
from rnas_lib.bounds import margin_lower_bound, output_bounds
from rnas_lib.data import TensorData
from rnas_lib.network import Network
from rnas_lib.tiers import get_tier
from rnas_lib.train import TrainConfig, recipe, training_loss, train_network


def _images(B=64, C=3, H=32, seed=0):
    return torch.rand(B, C, H, H, generator=torch.Generator().manual_seed(seed))


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = _images(B=256, C=2, H=8)
    out = random_crop(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = []
    for b in range(len(x)):  # every output is exactly one of the 9×9 windows
        hits = [(i, j) for i in range(9) for j in range(9) if torch.equal(padded[b, :, i:i + 8, j:j + 8], out[b])]
        assert hits, b
        offsets.append(hits[0])
    # the offsets are spread uniformly over 0..8 (χ² over 9 values per axis, 256 draws)
    for axis in range(2):
        counts = torch.bincount(torch.tensor([o[axis] for o in offsets]), minlength=9).double()
        assert ((counts - 256 / 9) ** 2 / (256 / 9)).sum() < 26.1  # p = 0.001 with 8 degrees of freedom
    assert torch.equal(random_crop(x, 0), x)


def test_random_flip_mirrors_about_half_the_images():
    x = _images(B=400, H=6)
    out = random_flip(x, torch.Generator().manual_seed(2))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ kept).all()  # each image is either mirrored or unchanged
    assert 160 <= int(flipped.sum()) <= 240  # Binomial(400, ½): ±4 standard deviations


def test_cutout_fills_one_clipped_square_with_the_mean():
    x = _images(B=300, H=32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465])
    out = cutout(x, 16, mean, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    changed = (out != x).any(1)  # (B, H, W)
    areas = changed.flatten(1).sum(1)
    assert areas.max() <= 256 and areas.min() >= 64  # a 16×16 square, at worst clipped to 8×8 at a corner
    for b in range(len(x)):
        rows, cols = changed[b].any(1).nonzero()[:, 0], changed[b].any(0).nonzero()[:, 0]
        assert int(areas[b]) == len(rows) * len(cols)  # a rectangle
        assert torch.allclose(out[b][:, changed[b]], mean[:, None].expand(3, int(areas[b])))
    # squares centred uniformly: pixels near the centre are cut more often than corners, ~¼ overall
    assert 0.15 < changed.double().mean() < 0.3
    assert changed[:, 12:20, 12:20].double().mean() > 2 * changed[:, :4, :4].double().mean()
    assert torch.equal(cutout(x, 0, mean), x)


def test_augment_is_seeded_and_checks_its_arguments():
    x = _images(B=8)
    a = augment(x, 4, True, 16, 0.5, torch.Generator().manual_seed(5))
    b = augment(x, 4, True, 16, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    with pytest.raises(ValueError, match="crop padding"):
        random_crop(x, -1)
    with pytest.raises(ValueError, match="cutout length"):
        cutout(x, 2.5, 0.0)


def _aux_net(seed=0):
    torch.manual_seed(seed)
    return Network("DARTS_V2", 4, 10, 3, in_channels=3, auxiliary=True)


def test_auxiliary_head_is_used_in_the_training_loss_only():
    net = _aux_net()
    x, y = _images(B=4), torch.tensor([0, 1, 2, 3])
    logits, aux = net.forward_with_auxiliary(x)
    assert logits.shape == aux.shape == (4, 10)
    loss, out = training_loss(net, x, y, 0.4)
    torch.testing.assert_close(loss, F.cross_entropy(out, y) + 0.4 * F.cross_entropy(aux, y))
    grads = torch.autograd.grad(loss, list(net.auxiliary_head.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    # forward (evaluation, attacks, bounds) returns the logits alone and ignores the head
    net.eval()
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (4, 10)
    with torch.no_grad():
        for p in net.auxiliary_head.parameters():
            p.add_(1.0)
    assert torch.equal(net(x), out)
    lb, ub = output_bounds(net, x[:2], 0.01, "inf", "crown-ibp")
    assert (lb <= out[:2] + 1e-5).all() and (out[:2] <= ub + 1e-5).all()
    assert margin_lower_bound(net, x[:2], y[:2], 0.01).shape == (2,)
    with pytest.raises(ValueError, match="8×8 feature map"):
        net.forward_with_auxiliary(_images(B=2, H=16))
    with pytest.raises(ValueError, match="no auxiliary head"):
        Network("DARTS_V2", 4, 10, 3).forward_with_auxiliary(x)


def test_training_with_the_auxiliary_loss_and_recipe_runs_and_saves_the_head(tmp_path):
    net = _aux_net(1)
    data = TensorData(_images(B=16), torch.arange(16) % 10)
    config = TrainConfig(epochs=2, batch_size=8, augment=True, cutout=8, auxiliary_weight=0.4, drop_path_prob=0.2)
    head = [p.detach().clone() for p in net.auxiliary_head.parameters()]
    r = train_network(net, data, data, config, tmp_path, progress=False)
    assert len(r.history) == 2 and not r.model.training
    assert any(not torch.equal(a, b) for a, b in zip(head, r.model.auxiliary_head.parameters()))
    again = train_mod.load_network(tmp_path / "checkpoint.pt")
    assert again.auxiliary_head is not None and torch.equal(again(data.x[:4]), r.model(data.x[:4]))
    with pytest.raises(ValueError, match="needs a network with an auxiliary head"):
        train_network(Network("DARTS_V2", 4, 10, 3), data, data, config, progress=False)


def test_drop_path_schedule_rises_linearly_over_the_epochs(monkeypatch):
    config = TrainConfig(epochs=4, drop_path_prob=0.2)
    assert [config.drop_path_at(e) for e in range(4)] == pytest.approx([0.0, 0.05, 0.1, 0.15])
    seen = []
    real = train_mod.training_loss

    def spy(model, x, y, w):
        seen.append(model.drop_path_prob)
        return real(model, x, y, w)
    monkeypatch.setattr(train_mod, "training_loss", spy)
    net = Network("DARTS_V2", 4, 10, 3, in_channels=1)
    data = TensorData(torch.rand(8, 1, 8, 8), torch.arange(8) % 10)
    train_network(net, data, data, config, progress=False)
    assert seen == pytest.approx([0.0, 0.05, 0.1, 0.15])  # one batch per epoch


def test_paper_tier_trains_with_the_darts_recipe_and_smoke_without():
    paper = recipe(get_tier("paper").train_recipe, get_tier("paper").dataset)
    assert paper == dict(lr=0.025, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0, drop_path_prob=0.2,
                         auxiliary_weight=0.4, augment=True, crop_padding=4, cutout=16)
    assert recipe(get_tier("smoke").train_recipe, get_tier("smoke").dataset) == {}
    assert recipe(get_tier("tutorial").train_recipe, "mnist") == {}
    on_mnist = recipe("darts", "mnist")  # no crop/flip/cutout off CIFAR
    assert not on_mnist.get("augment") and not on_mnist.get("cutout") and on_mnist["auxiliary_weight"] == 0.4
    with pytest.raises(ValueError, match="unknown training recipe"):
        recipe("fancy", "cifar10")
    for bad in (dict(cutout=-1), dict(crop_padding=1.5), dict(auxiliary_weight=-0.1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_run_training_takes_the_tier_recipe(tmp_path, monkeypatch):
    captured = {}

    def fake_train(model, train, test, config, out_dir, resume, progress, run_config=None):
        captured.update(model=model, config=config)
        return None
    monkeypatch.setattr(train_mod, "train_network", fake_train)
    monkeypatch.setattr(train_mod, "load_dataset", lambda *a, **k: None)
    train_mod.run_training("DARTS_V2", "paper", out_dir=tmp_path, train_C=4, train_layers=3, cutout=8)
    c = captured["config"]
    assert (c.augment, c.cutout, c.auxiliary_weight, c.drop_path_prob, c.lr) == (True, 8, 0.4, 0.2, 0.025)
    assert captured["model"].auxiliary_head is not None
    train_mod.run_training("DARTS_V2", "smoke", out_dir=tmp_path / "s")
    c = captured["config"]
    assert (c.augment, c.cutout, c.auxiliary_weight, c.drop_path_prob) == (False, 0, 0.0, 0.0)
    assert captured["model"].auxiliary_head is None
