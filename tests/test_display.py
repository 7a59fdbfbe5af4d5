"""What notebooks show: one-line progress, Markdown tables, relative paths; the ε grids per dataset;
the records through which notebooks 07/08 load the runs notebook 06 trained; the slider's static view."""
import pytest
import torch

from rnas_lib import PROJECT_ROOT
from rnas_lib.display import markdown_table, progress, relative
from rnas_lib.tiers import EPS_GRIDS, eps_grid


def test_progress_leaves_one_line_with_count_time_and_postfix(capsys):
    bar = progress(range(3), desc="train", unit="epoch")
    for _ in bar:
        bar.set_postfix(acc="0.9")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("train: 3 epochs in ") and out[0].endswith(" s (acc=0.9)")


@pytest.mark.parametrize("kwargs", [dict(initial=4, total=4), dict(disable=True)])
def test_progress_says_nothing_when_there_is_nothing_to_do(kwargs, capsys):
    for _ in progress(range(kwargs.get("initial", 0), 4), desc="train", **kwargs):
        pass
    captured = capsys.readouterr()
    assert captured.out == "" and "train" not in captured.err


def test_progress_counts_only_the_work_done_after_a_resume(capsys):
    for _ in progress(range(2, 5), desc="search", initial=2, total=5, unit="epoch"):
        pass
    assert capsys.readouterr().out.startswith("search: 3 epochs in ")


def test_markdown_table_forms_and_escaping():
    rows = markdown_table({"a": {"x": 1.23456, "y": None}, "b": {"x": 2}}, index="arch", formats={"x": ".2f"})
    assert rows.splitlines() == ["| arch | x | y |", "|---|---|---|", "| a | 1.23 | — |", "| b | 2.00 | — |"]
    assert markdown_table({"k": 0.5}).splitlines()[2] == "| k | 0.5 |"
    # a table's pipe is escaped, LaTeX's \| (a norm) is left alone
    assert markdown_table([{"m": r"$\|J\|$ | q"}]).splitlines()[2] == r"| $\|J\|$ \| q |"
    with pytest.raises(ValueError, match="at least one row"):
        markdown_table([])


def test_relative_paths_never_show_the_machine(tmp_path):
    assert relative(PROJECT_ROOT / "runs" / "smoke" / "x.json") == "runs/smoke/x.json"
    assert relative(tmp_path / "deep" / "y.json") == "y.json"


def test_eps_grids_per_dataset_start_at_zero_and_grow():
    assert eps_grid("digits", "inf") == EPS_GRIDS["digits"]["inf"]
    assert eps_grid("mnist", 2) == eps_grid("fashion_mnist", 2) == EPS_GRIDS["grey"][2]
    assert eps_grid("cifar10", "inf")[-1] == pytest.approx(8 / 255)
    assert eps_grid("npz:x.npz", "inf", in_channels=3) == eps_grid("cifar10", "inf")
    for grids in EPS_GRIDS.values():
        for grid in grids.values():
            assert grid[0] == 0.0 and all(a < b for a, b in zip(grid, grid[1:]))
    eps_grid("digits", "inf").append(1.0)  # a copy: the registry is not changed by its callers
    assert eps_grid("digits", "inf") == EPS_GRIDS["digits"]["inf"]
    with pytest.raises(ValueError, match="no ε grid for dataset 'folder:x'"):
        eps_grid("folder:x", "inf")
    with pytest.raises(ValueError, match="norm must be"):
        eps_grid("digits", 1)


def test_notebook_07_loads_the_run_notebook_06_recorded_not_the_defaults():
    """06 trains with a changed epoch count and records it; retrained_model finds that run (loaded,
    the same weights), where trained_model with the tier's defaults would train another."""
    from rnas_lib.train import (retrain_record_path, retrained_model, retrained_names, run_training,
                                save_retrain_record)

    settings = dict(epochs=1, train_C=4, train_layers=3, train_limit=128, test_limit=64)
    first = run_training("DARTS_V2", "smoke", 0, name="DARTS_V2", progress=False, **settings)
    save_retrain_record(first, "DARTS_V2", "smoke", 0, overrides=settings)
    assert "DARTS_V2" in retrained_names("smoke", 0)
    again, record = retrained_model("DARTS_V2", "smoke", 0, progress=False)
    assert record["overrides"] == settings and again.out_dir == first.out_dir and len(again.history) == 1
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again.model(x), first.model.eval()(x))
    # a record whose settings now name another run is refused
    path = retrain_record_path("smoke", "DARTS_V2", 0)
    path.write_text(path.read_text().replace(first.out_dir.name, "DARTS_V2_seed0-0000000000"))
    with pytest.raises(ValueError, match="re-run notebook 06"):
        retrained_model("DARTS_V2", "smoke", 0, progress=False)
    path.unlink()


def test_a_cell_searched_at_another_budget_is_found_through_its_record(monkeypatch):
    """06 retrains the cell of a shorter search (its search_epochs) and records that budget;
    retrained_model then loads the same search and training run (neither is repeated), where the
    tier's budget would name another search."""
    from rnas_lib import search as search_module
    from rnas_lib import train as train_module
    from rnas_lib.search import run_search, search_run_dir
    from rnas_lib.train import retrained_model, run_training, save_retrain_record

    budget = dict(search_limit=128, search_C=4, epochs=1, batch_size=32)
    training = dict(epochs=1, train_C=4, train_layers=3, train_limit=128, test_limit=64)
    found = run_search("smoke", "darts", 0, progress=False, **budget)
    first = run_training(found.genotype, "smoke", 0, name="darts", progress=False, **training)
    save_retrain_record(first, "darts", "smoke", 0, overrides=training, search_overrides=budget)

    def refuse(*args, **kwargs):
        raise AssertionError("a recorded run was searched or trained again")

    monkeypatch.setattr(train_module, "run_search", refuse)
    monkeypatch.setattr(search_module, "search", refuse)
    saved = (first.out_dir / "checkpoint.pt").stat().st_mtime_ns
    again, record = retrained_model("darts", "smoke", 0, progress=False)
    assert record["search_overrides"] == budget and again.out_dir == first.out_dir and len(again.history) == 1
    assert (first.out_dir / "checkpoint.pt").stat().st_mtime_ns == saved  # loaded, not trained again
    assert search_run_dir("smoke", "darts", 0, **budget) == found.out_dir != search_run_dir("smoke", "darts", 0)


def test_an_unfinished_run_cannot_be_recorded(tmp_path):
    from rnas_lib.train import TrainResult, save_retrain_record

    with pytest.raises(ValueError, match="only a finished training run"):
        save_retrain_record(TrainResult(None, [], 0.0, tmp_path), "DARTS_V2", "smoke", 0)


def test_the_slider_shows_its_current_view_as_a_figure_without_a_front_end(monkeypatch):
    """show_attack_explorer displays the controls with a one-line text fallback and the current view
    as a PNG in a display slot that a change of ε updates."""
    import matplotlib

    matplotlib.use("Agg")
    import IPython.display

    from rnas_lib import widgets
    from rnas_lib.data import TensorData

    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def fake_display(obj, raw=False, display_id=False):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    data = TensorData(torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,)))
    explorer = widgets.show_attack_explorer(net, data, index=1, eps=0.1, eps_max=0.3, steps=2)
    assert "need a live kernel" in shown[0]["text/plain"] and "VBox" not in shown[0]["text/plain"]
    assert shown[1].data.startswith(b"\x89PNG")
    explorer.eps.value = 0.2
    assert updates and updates[-1].data.startswith(b"\x89PNG") and updates[-1].data != shown[1].data
