"""Jacobian norms (rnas_lib.jacobian) against torch.func.jacrev, finite differences and sampling."""
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from rnas_lib.data import load_dataset, search_split
from rnas_lib.genotypes import random_genotype
from rnas_lib.jacobian import dual_norm, jacobian_norm
from rnas_lib.network import Network
from rnas_lib.robustness import TERMS
from rnas_lib.search import SearchConfig, search
from rnas_lib.supernet import SearchNetwork

B = 3


def _warm(model, seed=0):
    """Float64, with running statistics from a few training-mode batches."""
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8, dtype=torch.float64, generator=g))
    return model


def _supernet(seed=0):
    torch.manual_seed(seed)
    model = SearchNetwork(4, 10, 3, in_channels=1, mean=[0.3], std=[0.4])
    with torch.no_grad():  # away from uniform α so that the op weights matter
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return _warm(model, seed)


def _network(seed=0):
    torch.manual_seed(seed)
    genotype = random_genotype(generator=torch.Generator().manual_seed(seed))
    return _warm(Network(genotype, 4, 10, 3, in_channels=1, mean=[0.3], std=[0.4]), seed)


def _inputs(seed=1, n=B):
    return torch.rand(n, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _jacrev(model, x):
    """(B, C, n): per-sample Jacobians with torch.func (eval mode: samples independent)."""
    return torch.stack([torch.func.jacrev(lambda xi: model(xi[None])[0])(xb).flatten(1) for xb in x])


def _reference_norms(J, q):
    if q == "fro":
        return J.pow(2).sum((1, 2))
    return torch.linalg.vector_norm(J, ord=q, dim=2).sum(1)


@pytest.mark.parametrize("make", [_supernet, _network], ids=["SearchNetwork", "Network"])
@pytest.mark.parametrize("q", ["fro", 1, 2])
def test_exact_matches_jacrev(make, q):
    model = make().eval()
    x = _inputs()
    J = _jacrev(model, x)
    got = jacobian_norm(model, x, "exact", q=q)
    want = _reference_norms(J, q)
    assert got.shape == (B,)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-12), (got, want)
    assert torch.allclose(jacobian_norm(model, x, mode="exact", q=q), want, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("make", [_supernet, _network], ids=["SearchNetwork", "Network"])
@pytest.mark.parametrize("q", ["fro", 1, 2])
def test_top_logit_is_the_predicted_logits_gradient(make, q):
    model = make().eval()
    x = _inputs()
    top = model(x).argmax(1)
    J = _jacrev(model, x)
    rows = J[torch.arange(B), top]  # (B, n)
    want = rows.pow(2).sum(1) if q == "fro" else torch.linalg.vector_norm(rows, ord=q, dim=1)
    got = jacobian_norm(model, x, mode="top_logit", q=q)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-12), (got, want)


class _Replay(TorchFunctionMode):
    """Record the batch statistics of every training-mode F.batch_norm call, or replay them as
    constants (the network with its BatchNorms frozen at the recorded statistics)."""

    def __init__(self, stats=None):
        super().__init__()
        self.stats, self.record, self.i = stats if stats is not None else [], stats is None, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            z, weight, bias = args[0], kwargs.get("weight"), kwargs.get("bias")
            assert kwargs.get("training") and len(args) == 3
            if self.record:
                self.stats.append((z.mean((0, 2, 3)).detach(), z.var((0, 2, 3), unbiased=False).detach()))
            mean, var = self.stats[self.i]
            self.i += 1
            return F.batch_norm(z, mean, var, weight, bias, False, 0.0, kwargs.get("eps", 1e-5))
        return func(*args, **kwargs)


@pytest.mark.parametrize("make", [_supernet, _network], ids=["SearchNetwork", "Network"])
def test_train_mode_holds_the_clean_batch_statistics_constant(make):
    """Train mode = the network whose BatchNorms are fixed affine maps with this batch's statistics."""
    model = make().train()
    x = _inputs(n=5)
    with torch.no_grad():
        train_out = model(x)
        with _Replay() as rec:
            assert torch.allclose(model(x), train_out, atol=1e-12)

    def frozen(xi):
        with _Replay(rec.stats):
            return model(xi)

    # per sample b: the frozen network on a batch whose other samples are held fixed
    J = torch.stack([
        torch.autograd.functional.jacobian(lambda xb: frozen(torch.cat([x[:b], xb[None], x[b + 1:]]))[b],
                                           x[b]).flatten(1)
        for b in range(len(x))
    ])
    for q in ("fro", 1):
        got = jacobian_norm(model, x, "exact", q=q)
        assert torch.allclose(got, _reference_norms(J, q), rtol=1e-5), (got, _reference_norms(J, q))
    # the coupled batch Jacobian (statistics moving with x) is a different quantity
    coupled = torch.autograd.functional.jacobian(lambda xx: model(xx), x)  # (B, C, B, 1, 8, 8)
    diag = torch.stack([coupled[b, :, b].flatten(1) for b in range(len(x))])
    assert not torch.allclose(_reference_norms(diag, 1), _reference_norms(J, 1), rtol=1e-3)


def test_running_statistics_untouched():
    model = _supernet().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    jacobian_norm(model, _inputs(), 2)
    assert before and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_projection_estimator_is_unbiased():
    """2,000 single-projection estimates of one sample's ‖J‖_F²: mean within 3 standard errors of
    the exact value, and sample variance close to (2C·tr(A²) − 2·tr(A)²)/(C + 2), A = JJᵀ."""
    model = _network().eval()
    x = _inputs(n=1)
    N = 2000
    est = jacobian_norm(model, x.expand(N, -1, -1, -1), 1, create_graph=False,
                        generator=torch.Generator().manual_seed(0))
    J = _jacrev(model, x)[0]
    exact = J.pow(2).sum()
    se = est.std() / N ** 0.5
    assert abs(est.mean() - exact) < 3 * se, (est.mean().item(), exact.item(), se.item())
    A = J @ J.T
    C = A.shape[0]
    var = (2 * C * torch.trace(A @ A) - 2 * torch.trace(A) ** 2) / (C + 2)
    assert 0.8 < (est.var() / var).item() < 1.25
    # n_proj draws average: the variance shrinks as 1/n_proj
    est8 = torch.stack([jacobian_norm(model, x.expand(250, -1, -1, -1), 8, create_graph=False,
                                      generator=torch.Generator().manual_seed(s)) for s in range(2)]).flatten()
    assert 0.7 < (est8.var() * 8 / var).item() < 1.4


def _flat_grad(value, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, params, materialize_grads=True)])


@pytest.mark.parametrize("mode,q,train", [
    ("exact", 1, True), ("exact", 2, False), ("exact", "fro", True), ("projection", "fro", True),
    ("projection", "fro", False), ("top_logit", 1, False),
])
def test_gradients_match_finite_differences(mode, q, train):
    """Central differences along a random direction of α and of w. J jumps where a ReLU switches, so
    the step is small enough (1e-7, float64) that no ReLU of the supernet switches between θ ± h; in
    train mode the batch (8) is large enough for well-conditioned batch statistics."""
    model = _supernet().train(train)
    x = _inputs(n=8)
    n_proj = 3 if mode == "projection" else 1

    def metric():
        g = torch.Generator().manual_seed(5)  # the same projections at every evaluation
        return jacobian_norm(model, x, n_proj, mode=mode, q=q, generator=g).sum()

    for params in (model.arch_parameters(), model.weights()):
        grad = _flat_grad(metric(), params)
        g = torch.Generator().manual_seed(7)
        direction = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]
        h = 1e-7
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(d, alpha=h)
            plus = metric().item()
            for p, d in zip(params, direction):
                p.add_(d, alpha=-2 * h)
            minus = metric().item()
            for p, d in zip(params, direction):
                p.add_(d, alpha=h)
        fd = (plus - minus) / (2 * h)
        analytic = (grad * torch.cat([d.flatten() for d in direction])).sum().item()
        assert analytic == pytest.approx(fd, rel=1e-6), (analytic, fd)


def test_projection_call_forms_and_generator():
    model = _supernet().eval()
    x = _inputs()
    a = jacobian_norm(model, x, generator=torch.Generator().manual_seed(3))
    b = jacobian_norm(model, x, 1, mode="projection", generator=torch.Generator().manual_seed(3))
    assert a.shape == (B,) and torch.equal(a, b)
    assert not jacobian_norm(model, x, 2, create_graph=False).requires_grad


@pytest.mark.parametrize("kwargs,match", [
    ({"n_proj": 0}, "n_proj must be a positive integer"),
    ({"n_proj": 1.5}, "n_proj must be a positive integer"),
    ({"n_proj": "all"}, "n_proj must be a positive integer or 'exact'"),
    ({"mode": "hutchinson"}, "unknown Jacobian mode 'hutchinson'"),
    ({"n_proj": "exact", "mode": "projection"}, "contradicts"),
    ({"q": 3}, "unknown row norm q=3"),
    ({"q": "inf"}, "unknown row norm"),
    ({"q": 1}, "random projections estimate only the Frobenius norm"),
])
def test_bad_arguments(kwargs, match):
    model = _supernet().eval()
    with pytest.raises(ValueError, match=match):
        jacobian_norm(model, _inputs(), **kwargs)


def test_dual_norm():
    assert dual_norm("inf") == 1 and dual_norm(float("inf")) == 1 and dual_norm(2) == 2
    with pytest.raises(ValueError, match="unknown norm 1"):
        dual_norm(1)


def _digits(n=128):
    return search_split(load_dataset("digits", True, limit=n), 0)


def test_dsrna_jb_search_records_robustness():
    train_half, val_half = _digits()
    torch.manual_seed(0)
    model = SearchNetwork(4, 10, 3, in_channels=1)
    alpha0 = model.alphas_normal.detach().clone()
    config = SearchConfig(method="dsrna_jb", epochs=1, batch_size=32, method_options={"eps": 0.1, "n_proj": 1})
    result = search(model, train_half, val_half, config, progress=False)
    r = result.history[0]["robustness"]
    assert isinstance(r, float) and r < 0 and r == r
    assert not torch.equal(model.alphas_normal.detach(), alpha0)


@pytest.mark.parametrize("mode", ["projection", "exact", "top_logit"])
@pytest.mark.parametrize("norm", ["inf", 2])
def test_dsrna_jb_term_is_minus_the_first_order_bound(mode, norm):
    model = _supernet().eval()
    x = _inputs()
    n = x[0].numel()
    q = dual_norm(norm)
    if mode == "projection":  # the term draws its projections from its own generator
        frob2 = jacobian_norm(model, x, 1, generator=torch.Generator().manual_seed(4))
        want = -(0.05 * (n ** 0.5 if norm == "inf" else 1.0) * frob2.sqrt()).mean()
    else:
        want = -0.05 * jacobian_norm(model, x, mode=mode, q=q).mean()
    term = TERMS["dsrna_jb"](eps=0.05, norm=norm, mode=mode)
    term.generator.manual_seed(4)
    got = term(model, x, None)
    assert got.shape == () and torch.allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("kwargs,match", [
    ({"norm": 1}, "unknown norm 1"), ({"mode": "fro"}, "unknown Jacobian mode 'fro'"),
    ({"eps": 0}, "eps must be > 0"), ({"n_proj": 0}, "n_proj must be a positive integer"),
])
def test_dsrna_jb_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TERMS["dsrna_jb"](**kwargs)


def test_dsrna_combined_without_cb_says_so(monkeypatch):
    monkeypatch.delitem(TERMS, "dsrna_cb", raising=False)
    term = TERMS["dsrna_combined"]()
    with pytest.raises(ValueError, match="needs the certified-bound term"):
        term(_supernet(), _inputs(), torch.zeros(B, dtype=torch.long))


def test_return_logits_stands_in_for_the_training_forward():
    """The logits of jacobian_norm's forward equal a train-mode forward's, their CE has the same
    gradient w.r.t. α and w, and running statistics move exactly as that forward moves them."""
    model, twin = _supernet(), _supernet()
    model.train(), twin.train()
    x, y = _inputs(n=8), torch.arange(8) % 10
    norms, logits = jacobian_norm(model, x, "exact", return_logits=True)
    plain = twin(x)
    assert norms.shape == (8,) and torch.allclose(logits, plain, atol=1e-12)
    for p, q in zip(torch.autograd.grad(F.cross_entropy(logits, y), model.parameters()),
                    torch.autograd.grad(F.cross_entropy(plain, y), twin.parameters())):
        assert torch.allclose(p, q, rtol=1e-8, atol=1e-12)
    state, twin_state = model.state_dict(), twin.state_dict()
    assert all(torch.allclose(state[k], twin_state[k], rtol=1e-10) for k in state if "running" in k)


def test_with_logits_gives_the_same_term():
    model = _supernet().eval()
    x, y = _inputs(), torch.tensor([1, 2, 3])
    term = TERMS["dsrna_jb"](mode="exact")
    logits, r = term.with_logits(model, x, y)
    assert torch.allclose(logits, model(x)) and torch.allclose(r, term(model, x, y), rtol=1e-10)


def test_dsrna_combined_weights_the_two_terms():
    """R = w_cb·R_CB + w_jb·R_J, each part with its own options; by default each keeps its standalone
    ε and weight (w = the standalone γ) and the Combined search uses γ = 1, so that its α loss is
    CE − γ_CB·R_CB − γ_JB·R_J, the sum of the two standalone objectives."""
    model = _supernet().eval()
    x, y = _inputs(), torch.tensor([1, 2, 3])
    cb = TERMS["dsrna_cb"](eps=0.01, norm=2)(model, x, y)
    jb = TERMS["dsrna_jb"](eps=0.05, norm=2, mode="exact")(model, x, y)
    term = TERMS["dsrna_combined"](norm=2, w_cb=0.3, w_jb=2.0, cb_options={"eps": 0.01},
                                   jb_options={"eps": 0.05, "mode": "exact"})
    want = 0.3 * cb + 2.0 * jb
    assert torch.allclose(term(model, x, y), want, rtol=1e-10)
    logits, r = term.with_logits(model, x, y)
    assert torch.allclose(r, want, rtol=1e-10) and torch.allclose(logits, model(x))
    default = TERMS["dsrna_combined"](jb_options={"mode": "exact"})
    standalone = (TERMS["dsrna_cb"].default_gamma * TERMS["dsrna_cb"]()(model, x, y)
                  + TERMS["dsrna_jb"].default_gamma * TERMS["dsrna_jb"](mode="exact")(model, x, y))
    assert TERMS["dsrna_combined"].default_gamma == 1.0
    assert torch.allclose(default(model, x, y), standalone, rtol=1e-10)
    with pytest.raises(ValueError, match="w_cb must be ≥ 0"):
        TERMS["dsrna_combined"](w_cb=-1)
