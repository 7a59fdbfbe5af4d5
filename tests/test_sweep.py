"""rnas_lib.sweep: study files, grids on a Dask LocalCluster, resume, failures, the aggregated table."""
import json
import math
import sys
from pathlib import Path

import pytest

from rnas_lib import metric_validation, sweep
from rnas_lib.genotypes import from_dict
from rnas_lib.pipeline import parameter_count
from rnas_lib.runs import load_json, runs_root
from rnas_lib.tiers import threat_model
from rnas_lib.train import build_network

PROBE = Path(__file__).parent / "notebooks" / "sweep_probe.ipynb"


def probe_study(name, **spec):
    return sweep.study_from_dict({"name": name, "tier": "smoke", "kind": "notebook", "notebook": str(PROBE),
                                  "seeds": [0, 1], **spec})


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-threaded workers (threads of this process: starts in about a second;
    each notebook run is its own papermill process anyway)."""
    c = sweep.make_client(n_workers=2, processes=False, dashboard_address=None)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def test_a_grid_runs_on_a_local_cluster_and_a_rerun_skips_it(client):
    study = probe_study("probe_grid", parameters={"value": 7})
    summary = sweep.run_study(study, client=client, progress=False)
    assert sorted(summary["finished"]) == ["seed0", "seed1"] and not summary["failed"], summary
    assert summary["workers"] == 2
    for run in sweep.expand(study):
        folder = Path(run.folder)
        out = json.loads((folder / "runs" / "smoke" / "probe" / f"seed{run.config['seed']}.json").read_text())
        assert out == {"seed": run.config["seed"], "value": 7, "square": 49, "omp_threads": "1"}
        assert (folder / "sweep_probe.ipynb").exists()
        assert json.loads((folder / "record.json").read_text())["run"] == run.config
    stamps = {r.run_id: (Path(r.folder) / "record.json").stat().st_mtime_ns for r in sweep.expand(study)}

    again = sweep.run_study(study, client=client, progress=False)
    assert sorted(again["skipped"]) == ["seed0", "seed1"] and not again["finished"] and not again["failed"]
    assert stamps == {r.run_id: (Path(r.folder) / "record.json").stat().st_mtime_ns for r in sweep.expand(study)}


def test_a_failing_run_is_recorded_and_the_other_finishes(client):
    study = probe_study("probe_failure", seeds=[0], grid={"fail": [False, True]}, parameters={"value": 3})
    summary = sweep.run_study(study, client=client, progress=False)
    assert summary["finished"] == ["fail=false-seed0"] and summary["failed"] == ["fail=true-seed0"], summary
    bad, good = Path(sweep.expand(study)[1].folder), Path(sweep.expand(study)[0].folder)
    error = json.loads((bad / "error.json").read_text())
    assert "deliberate failure (seed 0)" in error["error"] and error["run"]["parameters"]["fail"] is True
    assert not (bad / "record.json").exists()
    assert json.loads((good / "runs" / "smoke" / "probe" / "seed0.json").read_text())["square"] == 9
    assert sweep.run_state(sweep.expand(study)[1]) == "failed"  # a rerun tries it again


def test_another_configuration_in_a_run_folder_stops_the_study_before_it_starts(client):
    study = probe_study("probe_conflict", seeds=[0], parameters={"value": 2})
    assert sweep.run_study(study, client=client, progress=False)["finished"] == ["seed0"]
    changed = probe_study("probe_conflict", seeds=[0], parameters={"value": 5})
    with pytest.raises(ValueError, match="another configuration"):
        sweep.run_study(changed, client=client, progress=False)
    out = Path(sweep.expand(study)[0].folder) / "runs" / "smoke" / "probe" / "seed0.json"
    assert json.loads(out.read_text())["value"] == 2


@pytest.mark.parametrize("spec, message", [
    ({"seeds": [0], "methods": ["darts"], "colour": 1}, "unknown study keys"),
    ({"seeds": [0], "methods": ["dartz"]}, "unknown methods"),
    ({"seeds": [], "methods": ["darts"]}, "seeds"),
    ({"seeds": [0, 0], "methods": ["darts"]}, "distinct"),
    ({"seeds": [0], "methods": ["darts"], "search": {"epoch": 1}}, "unknown search settings"),
    ({"seeds": [0], "methods": ["darts"], "evaluate": {"n_certfy": 1}}, "unknown evaluation settings"),
    ({"seeds": [0], "methods": ["darts"], "evaluate": {"certify_also": ["crown-fwd"]}}, "unknown certificate methods"),
    ({"seeds": [0], "methods": ["darts"], "evaluate": {"certify_method": "crown", "certify_also": ["crown"]}},
     "repeats a method"),
    ({"seeds": [0], "methods": ["darts"], "grid": {"x": [1]}}, r"\['grid'\] do not belong to kind: pipeline"),
    ({"seeds": [0], "kind": "metric_validation", "methods": ["darts"]}, "do not belong to kind: metric_validation"),
    ({"seeds": [0], "kind": "metric_validation", "architectures": {"n_random": "5"}}, "n_random must be"),
    ({"seeds": [0], "kind": "metric_validation", "evaluate": {"n_cw": 3}}, "unknown evaluate settings"),
    ({"seeds": [0], "kind": "notebook", "notebook": "05", "grid": {"seed": [1]}}, "set by the study"),
    ({"seeds": [0], "kind": "batch"}, "unknown study kind"),
    ({"seeds": [0], "methods": ["darts"], "training": "certifed"}, "darts: unknown training 'certifed'"),
    ({"seeds": [0], "methods": ["darts"], "training": {"DARTS_V2": "pgd"}}, "does not list in methods"),
    ({"seeds": [0], "methods": ["darts"], "training": ["pgd", "pgd"]}, "distinct regimes"),
    ({"seeds": [0], "kind": "metric_validation", "training": "pgd"}, "do not belong to kind: metric_validation"),
], ids=["key", "method", "no-seeds", "repeated-seed", "search-field", "eval-field", "cert-method", "cert-repeat",
        "grid-in-pipeline", "methods-in-metric-validation", "sample-spec", "validation-settings",
        "seed-in-grid", "kind", "training", "training-arch", "training-repeat", "training-in-metric-validation"])
def test_bad_study_files_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        sweep.study_from_dict({"name": "bad", "tier": "smoke", **spec})


def test_study_files_in_the_project_parse_and_expand():
    for path in sorted((Path(sweep.PROJECT_ROOT) / "studies").glob("*.yaml")):
        study = sweep.load_study(path)
        runs = sweep.expand(study)
        grid = math.prod(len(v) for v in study.grid.values())
        if study.kind == "metric_validation":  # one run per sampled architecture and seed
            sample = metric_validation.sample_architectures(metric_validation.SampleSpec.from_dict(study.architectures))
            assert len(runs) == len(sample) * len(study.seeds) and len(sample) >= study.architectures["n_random"]
        elif study.kind == "pipeline":  # methods × their training regimes × seeds
            assert len(runs) == sum(len(study.training[m]) for m in study.methods) * len(study.seeds)
        else:
            assert len(runs) == max(len(study.methods), 1) * grid * len(study.seeds)
        assert len({r.folder for r in runs}) == len(runs)
    smoke = sweep.load_study(Path(sweep.PROJECT_ROOT) / "studies" / "smoke.yaml")
    assert len(smoke.seeds) >= 5 and {"darts", "random", "dsrna_cb", "dsrna_jb", "dsrna_combined", "pcdarts",
                                      "DARTS_V1", "DARTS_V2", "PC_DARTS"} <= set(smoke.methods)


TINY = {"search": {"epochs": 1, "search_limit": 96, "batch_size": 32},
        "train": {"epochs": 1, "train_limit": 128, "test_limit": 64, "batch_size": 32},
        "evaluate": {"n_eval": 12, "pgd_steps": 3, "n_cw": 3, "cw_steps": 2, "cw_binary_search_steps": 1,
                     "n_autoattack": 4, "autoattack_steps": 2, "n_certify": 3, "certify_method": "ibp",
                     "certify_tol": 1e-2}}


def test_aggregate_gives_one_row_per_finished_pipeline_run():
    """Three real pipeline runs at tiny budgets (a search; a published cell, trained standard and
    certified), executed in this process; the table's columns and values are checked against the
    records and independent counts."""
    study = sweep.study_from_dict({"name": "tiny", "tier": "smoke", "methods": ["darts", "DARTS_V2"], "seeds": [3],
                                   "training": {"DARTS_V2": ["standard", "certified"]}, **TINY})
    runs = sweep.expand(study)
    assert [r.run_id for r in runs] == ["darts_seed3", "DARTS_V2_seed3", "DARTS_V2-certified_seed3"]
    assert "training" not in runs[1].config and runs[2].config["training"] == "certified"
    for run in runs:
        assert sweep.execute(run)["status"] == "finished", (Path(run.folder) / "error.json").read_text()
    folder = sweep.study_dir(study)
    out = runs_root() / "results_tiny"
    table = sweep.aggregate(folder, out)
    assert list(table.columns) == list(sweep.TABLE_COLUMNS) + ["cert_radius_linf_ibp", "cert_radius_l2_ibp",
                                                               "cert_seconds_ibp"]
    assert table["cert_radius_linf_ibp"].tolist() == table["cert_radius_linf"].tolist()
    assert list(zip(table["arch"], table["training"])) == [("DARTS_V2", "certified"), ("DARTS_V2", "standard"),
                                                           ("darts", "standard")]
    assert set(table["seed"]) == {3}
    certified = load_json(folder / "DARTS_V2-certified_seed3" / "train" / "config.json")["train"]["certified"]
    assert certified["eps"] == threat_model("smoke").linf and certified["method"] == "ibp"
    for run_id, row in zip(["DARTS_V2-certified_seed3", "DARTS_V2_seed3", "darts_seed3"], table.itertuples()):
        radii = json.loads((folder / run_id / "record.json").read_text())["result"]["certified"]["linf"]["radii"]
        assert row.cert_acc_linf == sum(r >= row.pgd_linf_eps for r in radii) / len(radii)
    full, table = table, table[table["training"] == "standard"].reset_index(drop=True)
    threat = threat_model("smoke")
    for _, row in table.iterrows():
        genotype = from_dict(json.loads(row["genotype"]))
        assert row["skip_normal"] == sum(op == "skip_connect" for op, _ in genotype.normal)
        assert row["params"] == parameter_count(build_network(genotype, "smoke"))
        assert row["pgd_linf_eps"] == row["fgsm_linf_eps"] == row["autoattack_linf_eps"] == threat.linf
        assert row["pgd_l2_eps"] == row["cw_l2_eps"] == threat.l2
        assert 0 <= row["pgd_linf_acc"] <= row["clean_acc"] <= 1 and row["n_eval"] == 12
        assert row["cert_radius_linf"] >= 0 and row["cert_radius_l2"] >= 0 and row["cert_method"] == "ibp"
    darts, published = table.set_index("arch").loc["darts"], table.set_index("arch").loc["DARTS_V2"]
    assert darts["search_seconds"] > 0 and math.isnan(published["search_seconds"])
    record = json.loads((folder / "darts_seed3" / "record.json").read_text())["result"]
    assert darts["clean_acc"] == [a["accuracy"] for a in record["attacks"] if a["attack"] == "fgsm" and a["eps"] == 0][0]
    assert darts["genotype"] == json.dumps(record["genotype"])
    saved = json.loads((out / "table.json").read_text())
    assert [r["arch"] for r in saved] == ["DARTS_V2", "DARTS_V2", "darts"] and (out / "table.csv").exists()
    curves = sweep.curves(folder)
    assert len(curves) == len(record["attacks"]) * 3 and set(curves["attack"]) == {"fgsm", "pgd", "cw", "autoattack"}

    results = sweep.write_results(study, runs_root() / "results" / "tiny", "python -m rnas_lib.sweep tiny.yaml")
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["command"] == "python -m rnas_lib.sweep tiny.yaml" and provenance["runs_finished"] == 3
    assert len(provenance["commit"]) == 40 and provenance["machine"]["cpu_count"] >= 1 and provenance["date"]
    loaded, loaded_curves, loaded_provenance = sweep.load_results(results)
    assert list(loaded.columns) == list(full.columns) and list(loaded["arch"]) == ["DARTS_V2", "DARTS_V2", "darts"]
    assert loaded["pgd_linf_acc"].tolist() == pytest.approx(full["pgd_linf_acc"].tolist())
    assert len(loaded_curves) == len(curves) and loaded_provenance == provenance
    with pytest.raises(FileNotFoundError, match="neither a study's table.csv"):
        sweep.load_results(runs_root() / "nothing_here")


def test_a_notebook_grid_crosses_methods_parameters_and_seeds():
    study = sweep.study_from_dict({"name": "nb", "tier": "smoke", "kind": "notebook", "notebook": "05",
                                   "methods": ["darts", "dsrna_jb"], "grid": {"gamma": [0.01, 0.1]},
                                   "parameters": {"epochs": 2}, "seeds": [0, 1]})
    runs = sweep.expand(study)
    assert len(runs) == 8 and len({r.folder for r in runs}) == 8
    first = runs[0]
    assert first.run_id == "darts-gamma=0.01-seed0"
    assert first.config["parameters"] == {"epochs": 2, "gamma": 0.01, "method": "darts"}
    assert first.config["notebook"] == "notebooks/05_robust_search.ipynb"
    assert {(r.config["parameters"]["method"], r.config["parameters"]["gamma"], r.config["seed"]) for r in runs} == {
        (m, g, s) for m in ("darts", "dsrna_jb") for g in (0.01, 0.1) for s in (0, 1)}


def test_a_slurm_cluster_without_dask_jobqueue_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if it were not installed: import fails
    with pytest.raises(ImportError, match="pip install dask-jobqueue"):
        sweep.make_client(slurm={"queue": "normal"})


def test_a_changed_tier_preset_makes_a_finished_pipeline_run_a_conflict(monkeypatch, tmp_path):
    """A pipeline run's identity holds the tier's resolved preset: when a tier default changes (the
    smoke search's α learning rate did), the finished run is refused as another configuration
    instead of being reported as a result of the new settings."""
    from rnas_lib import tiers

    study = sweep.study_from_dict({"name": "preset", "tier": "smoke", "kind": "pipeline",
                                   "methods": ["darts"], "seeds": [0]})
    (run,) = sweep.expand(study, root=tmp_path)
    assert run.config["tier_preset"]["search_lr_alpha"] == tiers.TIERS["smoke"].search_lr_alpha
    Path(run.folder).mkdir(parents=True)
    sweep.save_json({"run": run.config, "result": {}}, Path(run.folder) / "record.json")
    assert sweep.run_state(run) == "finished"
    monkeypatch.setitem(tiers.TIERS, "smoke", tiers.replace(tiers.TIERS["smoke"], search_lr_alpha=3e-4))
    (changed,) = sweep.expand(study, root=tmp_path)
    assert changed.folder == run.folder and sweep.run_state(changed) == "conflict"


def test_a_changed_evaluation_is_recomputed_from_the_checkpoints_never_stale(client, monkeypatch):
    """A finished pipeline run re-evaluated with other settings (more images, a second bound, another ε
    grid) loads its search and training checkpoints (no search or training step may run) and computes
    a new evaluation, checked against certificates computed here from the trained checkpoint; going
    back to the first settings restores the kept evaluation without computing anything."""
    from rnas_lib import pipeline, search, train
    from rnas_lib.data import load_dataset
    from rnas_lib.verify import average_certified_bound

    study = sweep.study_from_dict({"name": "reeval", "tier": "smoke", "methods": ["darts"], "seeds": [1], **TINY})
    assert sweep.run_study(study, client=client, progress=False)["finished"] == ["darts_seed1"]
    (run,) = sweep.expand(study)
    folder = Path(run.folder)
    first = json.loads((folder / "record.json").read_text())

    def forbidden(*args, **kwargs):
        raise AssertionError("a search or training step ran during a re-evaluation")

    for owner, name in ((search._Searcher, "alpha_step"), (search._Searcher, "weight_step"), (train, "training_loss")):
        monkeypatch.setattr(owner, name, forbidden)
    grid = list(threat_model("smoke").eps_linf[:1]) + [0.05, threat_model("smoke").linf]
    changed = sweep.with_evaluation(study, {"n_certify": 5, "certify_also": ["crown-ibp"], "eps_linf": grid})
    (stale,) = sweep.expand(changed)
    assert sweep.run_state(stale) == "stale"
    summary = sweep.run_study(changed, client=client, progress=False)
    assert summary["finished"] == summary["reevaluated"] == ["darts_seed1"] and not summary["failed"], summary
    second = json.loads((folder / "record.json").read_text())
    assert second["run"] == stale.config and second["result"]["evaluation"]["n_certify"] == 5
    assert second["result"]["genotype"] == first["result"]["genotype"]
    assert second["result"]["test_acc"] == first["result"]["test_acc"]
    assert sorted({a["eps"] for a in second["result"]["attacks"] if a["norm"] == "inf"}) == sorted(set(grid))

    model = train.load_network(folder / "train" / "checkpoint.pt")
    test = load_dataset("digits", False)
    for method, certified in (("ibp", second["result"]["certified"]),
                              ("crown-ibp", second["result"]["certified"]["also"]["crown-ibp"])):
        for key, norm in (("linf", "inf"), ("l2", 2)):
            here = average_certified_bound(model, test, norm, method, n=5, tol=1e-2, seed=1, progress=False)
            assert certified[key]["method"] == method and certified[key]["radii"] == pytest.approx(here["radii"])
    table = sweep.aggregate(sweep.study_dir(changed))
    assert table["cert_n"].tolist() == [5]
    assert table["cert_radius_l2_crown_ibp"].tolist() == pytest.approx([second["result"]["certified"]["also"]
                                                                         ["crown-ibp"]["l2"]["mean_radius"]])
    assert json.loads(sweep.evaluation_archive(run).read_text()) == first

    monkeypatch.setattr(pipeline, "evaluate_network", forbidden)
    back = sweep.run_study(study, client=client, progress=False)
    assert back["restored"] == ["darts_seed1"] and not back["finished"] and not back["failed"], back
    assert json.loads((folder / "record.json").read_text()) == first


def test_re_evaluation_refuses_a_run_whose_training_did_not_finish(tmp_path):
    from rnas_lib.pipeline import run_pipeline

    with pytest.raises(FileNotFoundError, match="did not finish"):
        run_pipeline("DARTS_V2", 0, "smoke", tmp_path / "run", TINY["search"], TINY["train"], TINY["evaluate"],
                     trained_only=True)


def test_evaluation_overrides_on_the_command_line_are_read_as_yaml_and_checked():
    from rnas_lib.pipeline import EvalSettings

    assert sweep.parse_overrides(["certify_method=crown", "n_certify=32", "certify_also=[crown-forward, crown-ibp]"]) \
        == {"certify_method": "crown", "n_certify": 32, "certify_also": ["crown-forward", "crown-ibp"]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        sweep.parse_overrides(["certify_method"])
    study = sweep.study_from_dict({"name": "o", "tier": "smoke", "methods": ["darts"], "seeds": [0], **TINY})
    with pytest.raises(ValueError, match="must hold 0"):
        EvalSettings.from_dict({**TINY["evaluate"], "eps_l2": [0.25]}).threat("smoke")
    with pytest.raises(ValueError, match="unknown evaluation settings"):
        sweep.with_evaluation(study, {"n_certfy": 3})
