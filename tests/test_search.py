import json

import pytest
import torch
import torch.nn.functional as F

from rnas_lib import search as search_mod
from rnas_lib.data import load_dataset, search_split
from rnas_lib.genotypes import load_genotype
from rnas_lib.search import SearchConfig, _Searcher, run_search, search
from rnas_lib.supernet import SearchNetwork

TINY = dict(search_limit=192, search_C=4, epochs=2, batch_size=32)


def test_same_seed_same_genotype_and_history(tmp_path):
    a = run_search("smoke", "darts", seed=1, out_dir=tmp_path / "a", progress=False, **TINY)
    b = run_search("smoke", "darts", seed=1, out_dir=tmp_path / "b", progress=False, **TINY)
    assert a.genotype == b.genotype
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(a.history) == strip(b.history)
    c = run_search("smoke", "darts", seed=2, out_dir=tmp_path / "c", progress=False, **TINY)
    assert strip(c.history) != strip(a.history)


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    whole = run_search("smoke", "darts", seed=0, out_dir=tmp_path / "whole", progress=False, **{**TINY, "epochs": 3})
    real_save = search_mod._save
    calls = []

    def save_then_die(*args):
        real_save(*args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session is cut off after epoch 2
    monkeypatch.setattr(search_mod, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_search("smoke", "darts", seed=0, out_dir=tmp_path / "cut", progress=False, **{**TINY, "epochs": 3})
    monkeypatch.setattr(search_mod, "_save", real_save)
    resumed = run_search("smoke", "darts", seed=0, out_dir=tmp_path / "cut", progress=False, **{**TINY, "epochs": 3})
    assert len(resumed.history) == 3
    for x, y in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(x, y)
    assert resumed.history[-1]["val_loss"] == whole.history[-1]["val_loss"]
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert len(saved["history"]) == 3 and saved["config"]["epochs"] == 3
    assert load_genotype(tmp_path / "cut" / "genotype.json") == whole.genotype


def test_resume_refuses_another_configuration(tmp_path):
    run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="another configuration.*lr_alpha"):
        run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, lr_alpha=1e-2, **{**TINY, "epochs": 1})


def test_history_records_alpha_and_genotype(tmp_path):
    r = run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, **TINY)
    h = r.history[-1]
    normal = torch.tensor(h["alpha_normal"])
    assert normal.shape == (14, 8) and torch.allclose(normal.sum(1), torch.ones(14), atol=1e-5)
    assert h["genotype"]["normal"] and 0.0 <= h["val_acc"] <= 1.0 and h["robustness"] is None


def test_random_method_samples_a_seeded_genotype(tmp_path):
    a = run_search("smoke", "random", seed=4, out_dir=tmp_path / "a", progress=False)
    b = run_search("smoke", "random", seed=4, out_dir=tmp_path / "b", progress=False)
    c = run_search("smoke", "random", seed=5, out_dir=tmp_path / "c", progress=False)
    assert a.genotype == b.genotype != c.genotype and a.model is None
    assert load_genotype(tmp_path / "a" / "genotype.json") == a.genotype


def test_second_order_alpha_gradient_matches_exact_unrolled_gradient():
    """The finite-difference Hessian-vector product against autograd through the unrolled step.

    A radius well below ReLU kinks (1e-5 in float64) makes the central difference exact to ~1e-9;
    DARTS' default 0.01 is a coarser approximation of the same quantity.
    """
    torch.manual_seed(0)
    model = SearchNetwork(2, 3, 3, steps=2, multiplier=2, in_channels=1).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_()
    xt, yt = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    xv, yv = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    config = SearchConfig(order=2, momentum=0.0, weight_decay=0.0, lr_w=0.1, hvp_radius=1e-5)
    searcher = _Searcher(model, config)
    approx, _ = searcher.unrolled_alpha_grads(xt, yt, xv, yv, robust=False)

    names = [n for n, p in model.named_parameters() if not n.startswith("alphas")]
    weights = [p for n, p in model.named_parameters() if not n.startswith("alphas")]
    alphas = model.arch_parameters()
    g = torch.autograd.grad(F.cross_entropy(model(xt), yt), weights, create_graph=True)
    unrolled = {n: w - 0.1 * gw for n, w, gw in zip(names, weights, g)}
    params = {**unrolled, "alphas_normal": alphas[0], "alphas_reduce": alphas[1]}
    loss = F.cross_entropy(torch.func.functional_call(model, params, (xv,)), yv)
    exact = torch.autograd.grad(loss, alphas)
    for a, e in zip(approx, exact):
        assert torch.allclose(a, e, rtol=1e-6, atol=1e-8), (a - e).abs().max()


def test_second_order_search_runs(tmp_path):
    r = run_search("smoke", "darts", seed=0, out_dir=tmp_path, progress=False, order=2, **{**TINY, "epochs": 1})
    assert r.history[0]["epoch"] == 1


def test_gamma_defaults_to_the_terms_choice():
    from rnas_lib.robustness import TERMS

    assert SearchConfig(method="dsrna_cb").gamma == TERMS["dsrna_cb"].default_gamma == 0.1
    assert SearchConfig(method="dsrna_jb").gamma == 0.01 and SearchConfig().gamma == 0.01
    assert SearchConfig(method="dsrna_cb", gamma=0.5).gamma == 0.5


def test_bad_search_configuration():
    with pytest.raises(ValueError, match="unknown search method 'foo'.*darts"):
        SearchConfig(method="foo")
    with pytest.raises(ValueError, match="order must be 1"):
        SearchConfig(order=3)
    with pytest.raises(ValueError, match="epochs"):
        SearchConfig(epochs=0)
    with pytest.raises(ValueError, match="gamma"):
        SearchConfig(gamma=-1.0)
    with pytest.raises(ValueError, match="takes no method_options"):
        SearchConfig(method="darts", method_options={"eps": 0.1})
    with pytest.raises(ValueError, match="unknown tier 'huge'"):
        run_search("huge")


def test_partial_channels_configuration_and_run_names():
    assert SearchConfig(method="pcdarts").partial_channels == 4
    assert SearchConfig().partial_channels == SearchConfig(method="dsrna_cb").partial_channels == 1
    assert search_mod.run_name(SearchConfig(method="pcdarts")) == "pcdarts"
    assert search_mod.run_name(SearchConfig(method="dsrna_cb", partial_channels=4)) == "dsrna_cb_pc4"
    assert search_mod.run_name(SearchConfig(method="pcdarts", partial_channels=2)) == "pcdarts_pc2"
    assert "pcdarts" in search_mod.methods()
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="partial_channels must be a positive integer"):
            SearchConfig(method="pcdarts", partial_channels=bad)
    model = SearchNetwork(4, 10, 3, in_channels=1)
    with pytest.raises(ValueError, match="partial_channels=4 but the supernet was built with partial_channels=1"):
        search(model, None, None, SearchConfig(method="pcdarts"))


def test_pcdarts_search_moves_beta_and_records_it(tmp_path):
    r = run_search("smoke", "pcdarts", seed=0, out_dir=tmp_path, progress=False, lr_alpha=0.05,
                   **{**TINY, "epochs": 1})
    assert r.model.partial_channels == 4 and len(r.model.arch_parameters()) == 4
    h = r.history[-1]
    beta = torch.tensor(h["beta_normal"])
    assert beta.shape == (14,) and torch.allclose(beta[:2].sum(), torch.tensor(1.0), atol=1e-6)
    assert r.model.betas_normal.detach().abs().max() > 2e-2  # Adam (3 steps of ~0.05) moved β off its 1e-3 init
    assert h["genotype"] == search_mod.to_dict(r.model.genotype())


def test_second_order_gradient_with_partial_channels_matches_exact_unrolled_gradient():
    """As above, for α and β of a partial-channel supernet (K = 2)."""
    torch.manual_seed(0)
    model = SearchNetwork(2, 3, 3, steps=2, multiplier=2, in_channels=1, partial_channels=2).double()
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_()
    xt, yt = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    xv, yv = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    config = SearchConfig(order=2, momentum=0.0, weight_decay=0.0, lr_w=0.1, hvp_radius=1e-5, partial_channels=2)
    approx, _ = _Searcher(model, config).unrolled_alpha_grads(xt, yt, xv, yv, robust=False)
    arch_names = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")
    names = [n for n, p in model.named_parameters() if n not in arch_names]
    weights = [p for n, p in model.named_parameters() if n not in arch_names]
    arch = model.arch_parameters()
    g = torch.autograd.grad(F.cross_entropy(model(xt), yt), weights, create_graph=True)
    params = {**{n: w - 0.1 * gw for n, w, gw in zip(names, weights, g)}, **dict(zip(arch_names, arch))}
    exact = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, params, (xv,)), yv), arch)
    assert len(approx) == 4
    for a, e in zip(approx, exact):
        assert torch.allclose(a, e, rtol=1e-6, atol=1e-8), (a - e).abs().max()


def test_alpha_entropy_is_the_normalised_shannon_entropy():
    import math

    import numpy as np

    uniform = np.full((14, 8), 1 / 8)
    assert search_mod.alpha_entropy(uniform) == pytest.approx(1.0)
    assert search_mod.alpha_entropy(np.eye(8)[[0] * 14]) == pytest.approx(0.0, abs=1e-12)
    p = torch.softmax(torch.randn(14, 8, dtype=torch.float64), 1).numpy()
    by_hand = np.mean([-sum(q * math.log(q) for q in row) for row in p]) / math.log(8)
    assert search_mod.alpha_entropy(p) == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="summing to 1"):
        search_mod.alpha_entropy(np.ones((14, 8)))


def test_search_convergence_counts_the_settled_last_epochs():
    from rnas_lib.genotypes import get_genotype, to_dict

    v1, v2 = to_dict(get_genotype("DARTS_V1")), to_dict(get_genotype("DARTS_V2"))
    near = json.loads(json.dumps(v2))
    near["normal"][0][0] = "max_pool_3x3" if near["normal"][0][0] != "max_pool_3x3" else "avg_pool_3x3"
    uniform = [[1 / 8] * 8] * 14
    history = [{"epoch": e + 1, "genotype": g, "alpha_normal": uniform, "alpha_reduce": uniform}
               for e, g in enumerate([v1, v2, v1, near, v2, v2])]
    conv = search_mod.search_convergence(history)
    assert conv["changes_to_final"][3:] == [1, 0, 0] and conv["changes_to_final"][2] > 1
    assert conv["settled_epochs"] == 3 and conv["entropy_normal"] == pytest.approx([1.0] * 6)


def test_estimate_search_seconds_multiplies_the_probed_step_by_the_search_steps(monkeypatch):
    """A fake clock that advances one second per reading makes every probed step last exactly
    1/probe_steps s: the estimate must then be (robust epochs + plain warm-up epochs) × the number
    of (train, val) batch pairs the search iterates per epoch, divided by probe_steps."""
    import itertools
    import math

    from rnas_lib.data import load_dataset, search_split

    clock = itertools.count()
    monkeypatch.setattr(search_mod.time, "perf_counter", lambda: float(next(clock)))
    overrides = dict(epochs=3, batch_size=64, search_limit=300)
    est = search_mod.estimate_search_seconds("smoke", "dsrna_jb", 0, probe_steps=2, warmup_epochs=1, **overrides)
    halves = search_split(load_dataset("digits", True, None, 300), 0)
    pairs = math.ceil(min(map(len, halves)) / 64)
    assert est["steps_per_epoch"] == pairs == 3 and est["epochs"] == 3
    assert est["seconds_per_step"] == est["seconds_per_plain_step"] == 0.5  # one reading apart, over two steps
    assert est["seconds"] == pytest.approx(3 * pairs * 0.5)
    assert search_mod.estimate_search_seconds("smoke", "random", 0)["seconds"] == 0.0
    with pytest.raises(ValueError, match="probe_steps"):
        search_mod.estimate_search_seconds("smoke", "darts", 0, probe_steps=0)
