"""rnas_lib.metric_validation: the sample of architectures, the metrics as the search computes them, and
a metric-validation study run on Dask and aggregated into its table."""
import json
import math
from pathlib import Path

import pytest
import torch

from rnas_lib import metric_validation as mv
from rnas_lib import sweep
from rnas_lib.data import load_dataset
from rnas_lib.genotypes import PUBLISHED, from_dict
from rnas_lib.train import build_network


def test_the_sample_is_distinct_deterministic_and_starts_with_the_named_cells():
    spec = mv.SampleSpec(n_random=40, sample_seed=3, published=("DARTS_V2", "PC_DARTS"), searched_from="results/smoke")
    archs = mv.sample_architectures(spec)
    assert archs == mv.sample_architectures(spec)
    assert [a["arch"] for a in archs[:2]] == ["DARTS_V2", "PC_DARTS"]
    searched = [a for a in archs if a["source"] == "searched"]
    assert searched and all(a["arch"].endswith("-seed0") and not a["arch"].startswith("random") for a in searched)
    randoms = [a for a in archs if a["source"] == "random"]
    assert [a["arch"] for a in randoms] == [f"random-{i:03d}" for i in range(40)]
    keys = {mv._canonical(from_dict(a["genotype"])) for a in archs}
    assert len(keys) == len(archs)  # no cell twice, however its node inputs are listed
    other = mv.sample_architectures(mv.SampleSpec(n_random=40, sample_seed=4, published=()))
    assert [a["genotype"] for a in other] != [a["genotype"] for a in randoms]


def test_a_cell_listed_in_another_order_is_the_same_cell():
    g = PUBLISHED["DARTS_V2"]
    swapped = g._replace(normal=[g.normal[1], g.normal[0], *g.normal[2:]])
    assert mv._canonical(swapped) == mv._canonical(g)
    assert mv._canonical(PUBLISHED["DARTS_V1"]) != mv._canonical(g)


@pytest.mark.parametrize("spec, message", [
    ({"n_random": -1}, "n_random must be"),
    ({"published": ["DARTS_V3"]}, "unknown published cells"),
    ({"random": 5}, "unknown architectures settings"),
    ({"published": "DARTS_V2"}, "must be a list"),
])
def test_bad_sample_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        mv.SampleSpec.from_dict(spec)


@pytest.mark.parametrize("spec, message", [({"n_metric": 0}, "n_metric must be"),
                                           ({"certify_method": "crown-fwd"}, "unknown certify_method"),
                                           ({"eps": 0.1}, "unknown evaluate settings")])
def test_bad_validation_settings_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        mv.ValidationSettings.from_dict(spec)


def test_searched_genotypes_need_a_searched_run(tmp_path):
    with pytest.raises(ValueError, match="no searched run with seeds"):
        mv.searched_genotypes("results/smoke", seeds=[99])
    with pytest.raises(FileNotFoundError, match="holds no table.csv"):
        mv.searched_genotypes(tmp_path)


def batch_statistics_frozen(model, x):
    """A copy of ``model`` in eval mode whose BatchNorms normalise with the batch statistics (mean,
    biased variance) that a train-mode pass over ``x`` computes: the network R_J differentiates."""
    import copy

    net = copy.deepcopy(model).train()
    stats, hooks = {}, []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(lambda m, inp, out, name=name: stats.__setitem__(
                name, (inp[0].mean((0, 2, 3)), inp[0].var((0, 2, 3), unbiased=False)))))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    for name, m in net.named_modules():
        if name in stats:
            m.running_mean, m.running_var = stats[name][0].clone(), stats[name][1].clone()
    return net.eval()


def test_the_metrics_are_the_search_terms_on_a_train_mode_copy():
    """R_J exact equals −ε·mean_b Σ_k ‖∂f_k/∂x_b‖₁ computed independently (torch.autograd.functional
    per image of a copy whose BatchNorms hold the batch's statistics); the model is left untouched."""
    torch.manual_seed(0)
    model = build_network("DARTS_V2", "smoke", C=4, layers=3).eval()
    batch = load_dataset("digits", True, limit=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = mv.ValidationSettings(n_metric=6)
    metrics = mv.search_metrics(model, batch, settings, seed=0)
    assert set(metrics) == set(mv.METRICS) and all(math.isfinite(v) for v in metrics.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert -1 < metrics["r_cb_margin"] < 1  # the normalised squash
    assert metrics == mv.search_metrics(model, batch, settings, seed=0)  # the projections are seeded

    net = batch_statistics_frozen(model.double(), batch.x.double())
    bounds = [settings.eps_jb * torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], xi).abs().sum()
              for xi in batch.x.double()]
    assert metrics["r_j_exact"] == pytest.approx(-float(torch.stack(bounds).mean()), rel=1e-4)


TINY = {"architectures": {"n_random": 1, "published": ["DARTS_V2"], "sample_seed": 5},
        "train": {"epochs": 1, "train_limit": 128, "test_limit": 64, "batch_size": 32},
        "evaluate": {"n_metric": 8, "short_epochs": 1, "n_eval": 12, "pgd_steps": 3, "n_certify": 3,
                     "certify_method": "ibp", "certify_tol": 1e-2}}


def test_a_metric_validation_study_runs_on_dask_resumes_and_aggregates(tmp_path):
    """Two architectures × one seed on a LocalCluster: one row each in the table, the measured
    metrics and robustness in range; a rerun skips both; results/ gets the table and provenance."""
    study = sweep.study_from_dict({"name": "mv_tiny", "tier": "smoke", "kind": "metric_validation", "seeds": [1],
                                   **TINY})
    client = sweep.make_client(n_workers=2, processes=False, dashboard_address=":0")
    try:
        summary = sweep.run_study(study, client=client, progress=False)
        assert sorted(summary["finished"]) == ["DARTS_V2_seed1", "random-000_seed1"] and not summary["failed"], summary
        again = sweep.run_study(study, client=client, progress=False)
        assert sorted(again["skipped"]) == ["DARTS_V2_seed1", "random-000_seed1"] and not again["finished"]
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    out = sweep.write_results(study, tmp_path / "mv_tiny", "test", summary)
    table, _, provenance = sweep.load_results(out)
    assert list(table.columns) == list(mv.TABLE_COLUMNS) and list(table["arch"]) == ["DARTS_V2", "random-000"]
    assert provenance["study_spec"]["kind"] == "metric_validation" and provenance["runs_finished"] == 2
    for row in table.itertuples():
        assert row.source == ("published" if row.arch == "DARTS_V2" else "random") and row.seed == 1
        assert 0 <= row.pgd_linf_acc <= row.clean_acc <= 1 and 0 <= row.pgd_l2_acc <= row.clean_acc
        assert row.cert_radius_linf >= 0 and row.cert_n == 3 and row.cert_method == "ibp"
        assert row.r_j_exact_init < 0 and row.r_j_exact_short < 0 and row.params > 0
        assert row.skip_connections == sum(op == "skip_connect" for cell in ("normal", "reduce")
                                           for op, _ in json.loads(row.genotype)[cell])
    run = next(r for r in sweep.expand(study) if r.config["arch"] == "DARTS_V2")
    assert from_dict(run.config["genotype"]) == PUBLISHED["DARTS_V2"]
    assert (Path(run.folder) / "short" / "complete.json").exists() and (Path(run.folder) / "train" / "complete.json").exists()
