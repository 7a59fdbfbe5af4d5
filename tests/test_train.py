import pickle

import pytest
import torch

from rnas_lib import train as train_mod
from rnas_lib.data import load_dataset
from rnas_lib.runs import load_checkpoint, save_checkpoint
from rnas_lib.train import TrainConfig, build_network, evaluate_accuracy, load_network, run_training, train_network


def test_checkpoint_rebuilds_the_trained_network(tmp_path):
    r = run_training("DARTS_V2", "smoke", seed=0, out_dir=tmp_path, progress=False, epochs=2, train_C=4)
    again = load_network(tmp_path / "checkpoint.pt")
    x = load_dataset("digits", False).x[:16]
    assert torch.equal(again(x), r.model.eval()(x))
    assert evaluate_accuracy(again, load_dataset("digits", False)) == pytest.approx(r.test_acc)


def test_resume_equals_uninterrupted_training(tmp_path, interrupt_after_first_epoch):
    whole = run_training("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "w", progress=False, epochs=3)
    interrupt_after_first_epoch("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "c", progress=False, epochs=3)
    resumed = run_training("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "c", progress=False, epochs=3)
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in whole.history]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoints_load_without_executing_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(ValueError, match="evil.pt is corrupt or not an rnas checkpoint"):
        load_checkpoint(path)
    save_checkpoint({"x": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["x"], torch.ones(2))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not a trained-network checkpoint"):
        load_network(tmp_path / "ok.pt")


def test_bad_training_configuration():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="drop_path_prob"):
        TrainConfig(drop_path_prob=1.5)
    with pytest.raises(ValueError, match="unknown tier"):
        build_network("DARTS_V2", "galaxy")


def test_training_on_real_mnist_subset(data_root, tmp_path):
    """A small network trained on 2,000 real MNIST images must clearly learn (chance is 10 %).

    Seeded (weights and batch order): over seeds 0-3 this reaches 0.60-0.73 test accuracy.
    """
    torch.manual_seed(0)
    model = build_network("DARTS_V2", "tutorial", data_root, C=4, layers=3)
    train = load_dataset("mnist", True, data_root, limit=2000)
    test = load_dataset("mnist", False, data_root, limit=500)
    r = train_network(model, train, test, TrainConfig(epochs=4, batch_size=32, lr=0.1, seed=0), progress=False)
    assert r.test_acc > 0.5


def test_the_demo_network_is_trained_once_and_sized_by_the_search_supernet():
    """demo_network: DARTS_V2 at the tier's search size; a second call (another notebook) loads the
    finished run from the same folder instead of training again."""
    from rnas_lib.tiers import get_tier

    first = train_mod.demo_network("smoke", 0, epochs=1)
    t = get_tier("smoke")
    assert first.model.C == t.search_C and first.model.layers == t.search_layers
    checkpoint = first.out_dir / "checkpoint.pt"
    written = checkpoint.stat().st_mtime_ns
    again = train_mod.demo_network("smoke", 0, epochs=1)
    assert again.out_dir == first.out_dir and again.test_acc == first.test_acc
    assert checkpoint.stat().st_mtime_ns == written  # loaded, not trained again
    for p, q in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)
