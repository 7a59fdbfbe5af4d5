"""Run folders keyed by their whole configuration, completion records, atomic saves, and resuming
after a kill (also in the middle of a save) to exactly what an uninterrupted run gives."""
import json

import pytest
import torch

from rnas_lib import runs
from rnas_lib import search as search_mod
from rnas_lib import train as train_mod
from rnas_lib.runs import (config_key, is_complete, load_checkpoint, load_json, require_complete, save_checkpoint,
                           save_json)
from rnas_lib.search import finished_genotype, run_search, search_run_dir
from rnas_lib.train import run_training

TINY = dict(search_limit=128, search_C=2, search_layers=3, epochs=2, batch_size=32)


def _strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


class Killed(BaseException):
    """Stands for the process being killed (not an Exception: nothing may catch it)."""


def _die_during_second_save(monkeypatch):
    """Make the second torch.save write half a file, then die (a kill in the middle of a save)."""
    real_save = torch.save
    calls = []

    def partial_save(state, f):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise Killed
        real_save(state, f)
    monkeypatch.setattr(runs.torch, "save", partial_save)


# -- folders keyed by the configuration --------------------------------------------------------

def test_every_setting_that_changes_the_result_changes_the_folder():
    base = search_run_dir("smoke", "darts", 0)
    others = [search_run_dir("smoke", "darts", 0, dataset="fashion_mnist"),
              search_run_dir("smoke", "darts", 0, search_C=8),
              search_run_dir("smoke", "darts", 0, search_layers=5),
              search_run_dir("smoke", "darts", 0, search_limit=100),
              search_run_dir("smoke", "darts", 0, epochs=1),
              search_run_dir("smoke", "darts", 0, order=2),
              search_run_dir("smoke", "darts", 1)]
    assert len({base, *others}) == 1 + len(others)
    assert search_run_dir("smoke", "darts", 0, train_C=99) == base  # a training setting: same search
    stored = load_json(base / "config.json")
    assert base.name == f"darts_seed0-{config_key(stored)}" and stored["tier"]["dataset"] == "digits"


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match=f"{tmp_path}.*another configuration.*search_C"):
        run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **{**TINY, "epochs": 1, "search_C": 4})
    assert is_complete(tmp_path) and load_json(tmp_path / "config.json")["tier"]["search_C"] == 2


# -- completion records and atomic saves ------------------------------------------------------

def interrupt_search(tmp_path, monkeypatch):
    """A smoke search killed right after its first complete save; returns the real _save."""
    real = search_mod._save

    def save_then_die(*args):
        real(*args)
        raise Killed
    monkeypatch.setattr(search_mod, "_save", save_then_die)
    with pytest.raises(Killed):
        run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **TINY)
    return real


def test_an_interrupted_search_is_not_finished(tmp_path, monkeypatch):
    real = interrupt_search(tmp_path, monkeypatch)
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "genotype.json").exists()
    assert not is_complete(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not finished.*run it again"):
        finished_genotype(tmp_path)
    monkeypatch.setattr(search_mod, "_save", real)
    done = run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **TINY)
    record = require_complete(tmp_path)
    assert record["epochs"] == 2 and finished_genotype(tmp_path) == done.genotype


def test_a_kill_during_a_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    _die_during_second_save(monkeypatch)
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, tmp_path / "other.pt")  # the first save goes through
    with pytest.raises(Killed):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "state.pt"]  # no temporary file left


def test_corrupt_files_raise_errors_naming_them(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    save_checkpoint({"w": torch.ones(4)}, bad)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=f"{bad} is corrupt.*delete it"):
        load_checkpoint(bad)
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=f"{bad} is corrupt"):
        load_checkpoint(bad)
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    (tmp_path / "r.json").write_text('{"a": 1')
    with pytest.raises(ValueError, match="r.json is not valid JSON"):
        load_json(tmp_path / "r.json")
    save_json({"a": 1}, tmp_path / "r.json")
    assert load_json(tmp_path / "r.json") == {"a": 1}


# -- kill and resume: identical to an uninterrupted run ------------------------------------------

@pytest.mark.parametrize("method, options", [
    ("darts", {"order": 2}),
    ("dsrna_cb", {"method_options": {"samples": 2}}),
    ("dsrna_jb", {}),
    ("dsrna_combined", {"method_options": {"cb_options": {"samples": 2}}}),
])
def test_search_killed_during_a_save_resumes_to_the_uninterrupted_result(method, options, tmp_path, monkeypatch):
    settings = {**TINY, "search_limit": 64, **options}  # one step per epoch
    whole = run_search("smoke", method, seed=0, out_dir=tmp_path / "whole", progress=False, **settings)
    with monkeypatch.context() as m:
        _die_during_second_save(m)
        with pytest.raises(Killed):
            run_search("smoke", method, seed=0, out_dir=tmp_path / "cut", progress=False, **settings)
    assert len(load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["history"]) == 1
    torch.randn(7)  # whatever the process did in between
    resumed = run_search("smoke", method, seed=0, out_dir=tmp_path / "cut", progress=False, **settings)
    assert _strip(resumed.history) == _strip(whole.history)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # α, weights and BatchNorm statistics
    assert json.loads((tmp_path / "cut" / "genotype.json").read_text()) == \
        json.loads((tmp_path / "whole" / "genotype.json").read_text())


def test_jacobian_term_draws_from_its_own_seeded_generator():
    from rnas_lib.robustness import TERMS

    term = TERMS["dsrna_jb"]()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    values = []
    for _ in range(2):
        term.generator.manual_seed(3)
        torch.manual_seed(0)
        first = term(model, x, y)
        torch.manual_seed(1)  # the global RNG does not matter
        values.append((first, term(model, x, y)))
    assert torch.equal(values[0][0], values[1][0]) and torch.equal(values[0][1], values[1][1])
    assert not torch.equal(values[0][0], values[0][1])  # and the stream advances


def test_training_with_drop_path_killed_during_a_save_resumes_to_the_same_weights(tmp_path, monkeypatch):
    settings = dict(epochs=2, train_C=4, train_layers=3, train_limit=128, test_limit=64, drop_path_prob=0.3)
    whole = run_training("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "whole", progress=False, **settings)
    with monkeypatch.context() as m:
        _die_during_second_save(m)
        with pytest.raises(Killed):
            run_training("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "cut", progress=False, **settings)
    assert not is_complete(tmp_path / "cut")
    with pytest.raises(FileNotFoundError, match="not finished"):
        train_mod.load_network(tmp_path / "cut" / "checkpoint.pt")  # an intermediate network is not the result
    torch.randn(7)
    resumed = run_training("DARTS_V1", "smoke", seed=0, out_dir=tmp_path / "cut", progress=False, **settings)
    assert is_complete(tmp_path / "cut")
    assert _strip(resumed.history) == _strip(whole.history)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_trained_model_refuses_the_genotype_of_an_unfinished_search(tmp_path, monkeypatch):
    interrupt_search(tmp_path, monkeypatch)
    (tmp_path / "genotype.json").write_text(json.dumps(train_mod.to_dict(train_mod.get_genotype("DARTS_V2"))))
    with pytest.raises(FileNotFoundError, match="not finished"):
        train_mod.trained_model(str(tmp_path / "genotype.json"), progress=False)
