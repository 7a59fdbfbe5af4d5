import pytest
import torch

from rnas_lib.data import batches, load_dataset
from rnas_lib.devices import model_device, resolve_device
from rnas_lib.search import run_search
from rnas_lib.train import run_training


def test_auto_device_is_the_gpu_when_there_is_one():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_devices(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'gpu0'.*'cpu', 'cuda'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="device 'meta' is not supported"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU.*use 'cpu' or None"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 GPU.*0..0"):
        resolve_device("cuda:3")


def test_batches_are_moved_to_the_device_in_the_same_order():
    data = load_dataset("digits", limit=10)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    plain = list(batches(data, 4, shuffle=True, generator=g1))
    moved = list(batches(data, 4, shuffle=True, generator=g2, device="meta"))
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in moved)
    assert [tuple(x.shape) for x, _ in plain] == [tuple(x.shape) for x, _ in moved] == [(4, 1, 8, 8)] * 2 + [(2, 1, 8, 8)]


def test_search_and_training_hand_the_model_back_on_the_cpu(tmp_path):
    tiny = dict(search_limit=96, search_C=4, epochs=1, batch_size=32)
    auto = run_search("smoke", "darts", out_dir=tmp_path / "auto", progress=False, **tiny)
    cpu = run_search("smoke", "darts", out_dir=tmp_path / "cpu", progress=False, device="cpu", **tiny)
    assert model_device(auto.model).type == model_device(cpu.model).type == "cpu"
    if not torch.cuda.is_available():  # the same run: the same history
        strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
        assert strip(auto.history) == strip(cpu.history)
    trained = run_training(cpu.genotype, "smoke", out_dir=tmp_path / "train", progress=False, device="cpu",
                           epochs=1, train_limit=64, test_limit=32, train_C=4)
    assert model_device(trained.model).type == "cpu" and not trained.model.training


def test_a_bad_device_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        run_search("smoke", "darts", out_dir=tmp_path / "s", progress=False, device="cuda", epochs=1)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        run_training("DARTS_V2", "smoke", out_dir=tmp_path / "t", progress=False, device="cuda", epochs=1)
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()
