"""Checks for the exercises at the end of the notebooks: each ``check_*`` takes the student's answer
(a function or a number), compares it with an independent computation on fresh inputs, prints one
line that says whether the answer is right (and, if not, on which input it fails) and returns
True/False. An answer still ``None`` is "not answered yet", never an error, so that a notebook runs
from top to bottom before any exercise is done. The solutions are in ``solutions/`` (one file per
notebook); ``tests/test_exercises.py`` runs them through these checks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _report(name: str, ok: bool, why: str = "") -> bool:
    print(f"{'✓' if ok else '✗'} {name}: " + ("right" if ok else f"not yet — {why}"))
    return ok


def _unanswered(name: str, answer) -> bool:
    if answer is None:
        print(f"· {name}: not answered yet")
        return True
    return False


def _close(a, b, tol=1e-6) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))


# ----------------------------------------------------------------------------- 00
def check_edge_count(edges) -> bool | None:
    """00: ``edges(steps)`` = the number of edges of a DARTS search cell with ``steps`` intermediate nodes."""
    from .genotypes import num_edges

    if _unanswered("edge count", edges):
        return None
    for steps in range(1, 8):
        got = edges(steps)
        if got != num_edges(steps):
            return _report("edge count", False, f"edges({steps}) = {got}, but node j has 2 + j inputs")
    return _report("edge count", True)


def check_alpha_loss(alpha_loss) -> bool | None:
    """00: ``alpha_loss(ce, r, gamma)``, the architecture loss DSRNA minimises (R is maximised)."""
    if _unanswered("architecture loss", alpha_loss):
        return None
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        ce, r, gamma = torch.rand(3, generator=gen).tolist()
        if not math.isclose(alpha_loss(ce, r, gamma), ce - gamma * r, rel_tol=1e-9):
            return _report("architecture loss", False, f"alpha_loss({ce:.3f}, {r:.3f}, {gamma:.3f}) — larger R must "
                           "lower the loss")
    return _report("architecture loss", True)


# ----------------------------------------------------------------------------- 01
def check_project_linf(project) -> bool | None:
    """01: ``project(x_adv, x, eps)`` = the closest point to ``x_adv`` in B_∞(x, ε) ∩ [0, 1]ⁿ."""
    if _unanswered("ℓ∞ projection", project):
        return None
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    x_adv = x + 0.6 * (torch.rand(x.shape, generator=gen) - 0.5) * 2
    for eps in (0.05, 0.2):
        expected = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
        got = project(x_adv.clone(), x.clone(), eps)
        if not _close(got, expected):
            return _report("ℓ∞ projection", False, f"at ε = {eps}: clamp δ to [−ε, ε] per pixel, then clip to [0, 1]")
    return _report("ℓ∞ projection", True)


def check_matched_radius(radius) -> bool | None:
    """01: ``radius(n, eps)`` = the ℓ2 radius whose n-ball has the volume (2ε)ⁿ of the ℓ∞ ball."""
    if _unanswered("volume-matched radius", radius):
        return None
    for n in (1, 2, 3, 10, 64, 784):
        for eps in (0.1, 1.0):
            # log-volumes: n·log(2ε) against (n/2)·log π + n·log r − lgamma(n/2 + 1)
            r = radius(n, eps)
            if not (r > 0 and math.isclose(n / 2 * math.log(math.pi) + n * math.log(r) - math.lgamma(n / 2 + 1),
                                           n * math.log(2 * eps), rel_tol=1e-9, abs_tol=1e-9)):
                return _report("volume-matched radius", False, f"radius({n}, {eps}) = {r} gives another volume")
    return _report("volume-matched radius", True)


# ----------------------------------------------------------------------------- 02
def check_sep_conv_params(params) -> bool | None:
    """02: ``params(k, C)`` = parameters of ``sep_conv_kxk`` with C channels (stride 1, affine BN)."""
    from .ops import make_op

    if _unanswered("sep_conv parameters", params):
        return None
    for k in (3, 5):
        for C in (1, 4, 16):
            count = sum(p.numel() for p in make_op(f"sep_conv_{k}x{k}", C, 1).parameters())
            if params(k, C) != count:
                return _report("sep_conv parameters", False, f"params({k}, {C}) = {params(k, C)}, counted {count}")
    return _report("sep_conv parameters", True)


def check_mixed_op(mixed) -> bool | None:
    """02: ``mixed(outputs, alpha)`` = Σ_o softmax(α)_o · outputs[o], outputs (8, B, C, H, W), α (8,)."""
    if _unanswered("mixed op", mixed):
        return None
    gen = torch.Generator().manual_seed(2)
    outputs = torch.randn(8, 2, 3, 4, 4, generator=gen)
    for alpha in (torch.zeros(8), torch.randn(8, generator=gen) * 3):
        expected = (torch.softmax(alpha, 0).view(8, 1, 1, 1, 1) * outputs).sum(0)
        if not _close(mixed(outputs, alpha), expected, 1e-5):
            return _report("mixed op", False, "weight each op's output by softmax(α) and sum over the ops")
    return _report("mixed op", True)


# ----------------------------------------------------------------------------- 03
def check_ibp_avg_pool(ibp_pool) -> bool | None:
    """03: ``ibp_pool(l, u)`` = the exact interval (lo, hi) of DARTS' ``avg_pool_3x3`` (stride 1,
    padding 1, ``count_include_pad=False``) over the box [l, u] of its input (B, C, H, W)."""
    from .ops import make_op

    if _unanswered("IBP through avg_pool_3x3", ibp_pool):
        return None
    gen = torch.Generator().manual_seed(3)
    op = make_op("avg_pool_3x3", 3, 1)
    l = torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64)
    u = l + 2 * torch.rand(l.shape, generator=gen, dtype=torch.float64)
    got = ibp_pool(l.clone(), u.clone())
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return _report("IBP through avg_pool_3x3", False, "return the pair (lo, hi)")
    lo, hi = (torch.as_tensor(b, dtype=torch.float64) for b in got)
    if lo.shape != l.shape or hi.shape != l.shape:
        return _report("IBP through avg_pool_3x3", False, f"stride 1 and padding 1 keep the shape {tuple(l.shape)}, "
                       f"got {tuple(lo.shape)} and {tuple(hi.shape)}")
    z = l + (u - l) * torch.rand((256, *l.shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pooled = op(z.flatten(0, 1)).view(z.shape)
    if bool((pooled < lo - 1e-9).any() or (pooled > hi + 1e-9).any()):
        return _report("IBP through avg_pool_3x3", False, "a point of the box pools outside [lo, hi] — unsound (at "
                       "the border DARTS' pool divides by the pixels inside the image: count_include_pad=False)")
    with torch.no_grad():
        exact = op(l), op(u)  # the pool is monotone: its extremes over the box are at the corners l and u
    if not (_close(lo, exact[0], 1e-9) and _close(hi, exact[1], 1e-9)):
        return _report("IBP through avg_pool_3x3", False, "sound but not exact: the pool's weights are ≥ 0, so its "
                       "interval is [pool(l), pool(u)]")
    return _report("IBP through avg_pool_3x3", True)


def check_fast_lin_slope(slope) -> bool | None:
    """03: ``slope(l, u)`` = Fast-Lin's lower ReLU slope u/(u − l) for unstable neurons (l < 0 < u)."""
    from .bounds import relu_relaxation

    if _unanswered("Fast-Lin lower slope", slope):
        return None
    gen = torch.Generator().manual_seed(33)
    l = -(3 * torch.rand(1000, generator=gen, dtype=torch.float64) + 1e-3)
    u = 3 * torch.rand(1000, generator=gen, dtype=torch.float64) + 1e-3
    a = torch.as_tensor(slope(l.clone(), u.clone()), dtype=torch.float64)
    if a.shape != l.shape:
        return _report("Fast-Lin lower slope", False,
                       f"one slope per neuron: shape {tuple(l.shape)}, got {tuple(a.shape)}")
    z = l + (u - l) * torch.rand(64, len(l), generator=gen, dtype=torch.float64)
    above = (a * z > F.relu(z) + 1e-9).any(0)
    if bool(above.any()):
        i = int(above.nonzero()[0])
        return _report("Fast-Lin lower slope", False, f"at l = {l[i]:.3f}, u = {u[i]:.3f} the line {a[i]:.3f}·z lies "
                       "above relu(z) somewhere in [l, u]: not a lower bound")
    if not _close(a, relu_relaxation(l, u, "fast-lin")[0]):
        return _report("Fast-Lin lower slope", False, "a valid lower line, but not Fast-Lin's: it is parallel to the "
                       "upper line, the chord from (l, 0) to (u, u)")
    return _report("Fast-Lin lower slope", True)


# ----------------------------------------------------------------------------- 04
def check_first_order_change(change) -> bool | None:
    """04: ``change(row, eps, norm)`` = sup_{‖δ‖_p ≤ ε} |row·δ| for one Jacobian row (a 1-D tensor)."""
    if _unanswered("first-order change", change):
        return None
    gen = torch.Generator().manual_seed(4)
    row = torch.randn(64, generator=gen, dtype=torch.float64)
    for norm, expected in (("inf", 0.1 * row.abs().sum()), (2, 0.1 * row.norm())):
        got = change(row, 0.1, norm)
        if not _close(got, expected):
            return _report("first-order change", False, f"ℓ{norm} threat: use the dual norm of the row")
    return _report("first-order change", True)


def check_worst_direction(direction) -> bool | None:
    """04: ``direction(row, eps, norm)`` = a δ with ‖δ‖_p ≤ ε that attains row·δ = ε‖row‖_q."""
    if _unanswered("worst-case δ", direction):
        return None
    gen = torch.Generator().manual_seed(5)
    row = torch.randn(64, generator=gen, dtype=torch.float64)
    for norm, p, q in (("inf", math.inf, 1), (2, 2, 2)):
        delta = torch.as_tensor(direction(row, 0.1, norm), dtype=torch.float64)
        if delta.shape != row.shape or float(delta.norm(p=p)) > 0.1 * (1 + 1e-9):
            return _report("worst-case δ", False, f"ℓ{norm}: δ must have the row's shape and ‖δ‖ ≤ ε")
        if not math.isclose(float(row @ delta), 0.1 * float(row.norm(p=q)), rel_tol=1e-9):
            return _report("worst-case δ", False, f"ℓ{norm}: row·δ = {float(row @ delta):.4g}, Hölder allows "
                           f"{0.1 * float(row.norm(p=q)):.4g}")
    return _report("worst-case δ", True)


# ----------------------------------------------------------------------------- 05
def check_alpha_entropy(entropy) -> bool | None:
    """05: ``entropy(weights)`` = the mean over the edges of −Σ_o p_o ln p_o / ln|O| for an (edges, ops)
    tensor of softmax rows (1 uniform, 0 one-hot)."""
    from .search import alpha_entropy

    if _unanswered("α entropy", entropy):
        return None
    gen = torch.Generator().manual_seed(5)
    eye = torch.eye(8, dtype=torch.float64)
    cases = {"uniform rows": torch.full((14, 8), 1 / 8, dtype=torch.float64),
             "one-hot rows (0·ln 0 counts as 0)": eye[torch.randint(0, 8, (14,), generator=gen)],
             "half one-hot, half uniform": torch.cat([eye[:7], torch.full((7, 8), 1 / 8, dtype=torch.float64)]),
             "random softmax rows": torch.softmax(2 * torch.randn(14, 8, generator=gen, dtype=torch.float64), 1),
             "four ops instead of eight": torch.softmax(torch.randn(5, 4, generator=gen, dtype=torch.float64), 1)}
    for name, p in cases.items():
        got = float(entropy(p.clone()))
        if not math.isclose(got, alpha_entropy(p), rel_tol=1e-6, abs_tol=1e-6):
            return _report("α entropy", False, f"{name}: got {got:.6g}, expected {alpha_entropy(p):.6g}")
    return _report("α entropy", True)


def check_hvp(hvp) -> bool | None:
    """05: ``hvp(grad_alpha, w, v)`` = DARTS' central finite difference for ∇²_{α,w} L_train · v:
    (grad_alpha(w + r·v) − grad_alpha(w − r·v)) / (2r) with r = 0.01/‖v‖."""
    if _unanswered("finite-difference Hessian-vector product", hvp):
        return None
    gen = torch.Generator().manual_seed(55)
    A = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    alpha = torch.randn(5, generator=gen, dtype=torch.float64)
    w0 = torch.randn(12, generator=gen, dtype=torch.float64)

    def loss_train(w, a):
        return (torch.sin(3 * w) * (A @ torch.softmax(a, 0))).sum() + (w ** 3).sum() * a.sum() / 10

    def grad_alpha(w):
        a = alpha.clone().requires_grad_(True)
        return torch.autograd.grad(loss_train(w.detach(), a), a)[0]

    for scale in (30.0, 1e-3):
        v = scale * torch.randn(12, generator=gen, dtype=torch.float64)
        # the exact mixed product: ∇_α (∇_w L_train · v), by double backward
        w, a = w0.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
        (g_w,) = torch.autograd.grad(loss_train(w, a), w, create_graph=True)
        (exact,) = torch.autograd.grad((g_w * v).sum(), a)
        got = torch.as_tensor(hvp(grad_alpha, w0.clone(), v.clone()), dtype=torch.float64)
        if got.shape != exact.shape:
            return _report("finite-difference Hessian-vector product", False,
                           f"the product has α's shape {tuple(exact.shape)}, got {tuple(got.shape)}")
        rel = float((got - exact).norm() / exact.norm())
        if not rel <= 1e-3:  # the central difference is off by O(0.01²)
            return _report("finite-difference Hessian-vector product", False,
                           f"‖v‖ = {float(v.norm()):.3g}: off the exact product by {rel:.2g} (relative); take a "
                           "central difference with the step r = 0.01/‖v‖ along v")
    return _report("finite-difference Hessian-vector product", True)


# ----------------------------------------------------------------------------- 06
def check_cosine_lr(lr) -> bool | None:
    """06: ``lr(epoch, epochs, lr_max, lr_min)`` = the cosine schedule of the notebook."""
    from .search import cosine_lr

    if _unanswered("cosine schedule", lr):
        return None
    for epochs in (1, 5, 50):
        for epoch in range(epochs):
            if not math.isclose(lr(epoch, epochs, 0.05, 0.001), cosine_lr(epoch, epochs, 0.05, 0.001), rel_tol=1e-9):
                return _report("cosine schedule", False, f"epoch {epoch} of {epochs}")
    return _report("cosine schedule", True)


def check_drop_path(drop) -> bool | None:
    """06: ``drop(h, p, generator)`` = drop-path on a batch of op outputs h (B, C, H, W): every sample
    zeroed with probability p, the survivors scaled by 1/(1 − p)."""
    if _unanswered("drop-path", drop):
        return None
    h = torch.ones(20000, 1, 2, 2)
    out = drop(h, 0.3, torch.Generator().manual_seed(6))
    per_sample = out.flatten(1)
    same = (per_sample == per_sample[:, :1]).all()
    first = per_sample[:, 0].double()
    two_values = bool(((first == 0) | ((first - 1 / 0.7).abs() < 1e-5)).all())
    kept = (first != 0).double().mean().item()
    ok = bool(same) and two_values and abs(kept - 0.7) < 0.02 and abs(out.mean().item() - 1) < 0.03
    return _report("drop-path", ok, "zero whole samples with probability p and scale the rest by 1/(1 − p), "
                   "so that the mean is unchanged")


# ----------------------------------------------------------------------------- 07
def check_momentum_pgd(attack) -> bool | None:
    """07: ``attack(model, x, y, eps, steps, step_size, mu)`` = ℓ∞ PGD with momentum (MI-FGSM, no
    random start): g ← μ·g + ∇L/‖∇L‖₁, x ← Π(x + α·sign(g)). With μ = 0 it is plain PGD."""
    from .attacks import pgd

    if _unanswered("momentum PGD", attack):
        return None
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    model.eval()
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    plain = pgd(model, x, y, 0.1, "inf", steps=5, step_size=0.03, random_start=False)
    if not _close(attack(model, x, y, 0.1, 5, 0.03, 0.0), plain, 1e-5):
        return _report("momentum PGD", False, "with μ = 0 it must equal rnas_lib.attacks.pgd without random start")
    x_adv = attack(model, x, y, 0.1, 5, 0.03, 0.9)
    if (x_adv - x).abs().max() > 0.1 + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
        return _report("momentum PGD", False, "with μ = 0.9 the example leaves the ε-ball or [0, 1]")
    if F.cross_entropy(model(x_adv), y) <= F.cross_entropy(model(x), y):
        return _report("momentum PGD", False, "with μ = 0.9 the loss did not increase")
    return _report("momentum PGD", True)


def check_minimum_norm_accuracy(accuracy) -> bool | None:
    """07: ``accuracy(clean_ok, still_ok, dist, eps)`` = robust accuracy at ε from a minimum-norm
    attack (C&W): correct clean, and the attack failed or needed a perturbation larger than ε."""
    if _unanswered("minimum-norm accuracy", accuracy):
        return None
    gen = torch.Generator().manual_seed(8)
    clean_ok = torch.rand(50, generator=gen) < 0.9
    still_ok = torch.rand(50, generator=gen) < 0.2
    dist = torch.rand(50, generator=gen) * 2
    for eps in (0.0, 0.5, 1.0, 3.0):
        expected = (clean_ok & (still_ok | (dist > eps))).double().mean().item()
        if not math.isclose(float(accuracy(clean_ok, still_ok, dist, eps)), expected, abs_tol=1e-9):
            return _report("minimum-norm accuracy", False, f"at ε = {eps}")
    return _report("minimum-norm accuracy", True)


# ----------------------------------------------------------------------------- 08
def check_certified_fraction(fraction) -> bool | None:
    """08: ``fraction(radii, eps)`` = certified accuracy at ε > 0 from the certified radii (a numpy
    array, 0 for a misclassified image): the fraction with radius ≥ ε."""
    import numpy as np

    if _unanswered("certified accuracy from radii", fraction):
        return None
    rng = np.random.default_rng(8)
    radii = rng.integers(1, 33, 200) / 64            # exact binary fractions: ε can equal a radius exactly
    radii[rng.random(200) < 0.2] = 0.0               # misclassified images
    for eps in (1 / 64, 5 / 64, 0.1, 0.25, 0.5, 1.0):
        expected = sum(1 for r in radii.tolist() if r >= eps) / len(radii)
        got = float(fraction(radii.copy(), eps))
        if not math.isclose(got, expected, abs_tol=1e-12):
            strict = math.isclose(got, float((radii > eps).mean()), abs_tol=1e-12)
            return _report("certified accuracy from radii", False, f"at ε = {eps:g}: got {got:.4f}, expected "
                           f"{expected:.4f} — " + ("an image whose radius equals ε is certified at ε" if strict else
                                                   "count over all images; a misclassified one has radius 0"))
    return _report("certified accuracy from radii", True)


def check_certification_gap(gap) -> bool | None:
    """08: ``gap(certified, attacked)`` = certified / attack radius per image, NaN where the image is
    misclassified (both 0); raises ValueError if some certified radius exceeds its attack radius."""
    if _unanswered("certification gap", gap):
        return None
    gen = torch.Generator().manual_seed(88)
    attacked = 0.5 * torch.rand(40, generator=gen, dtype=torch.float64) + 0.01
    certified = attacked * torch.rand(40, generator=gen, dtype=torch.float64)
    attacked[:5], certified[:5] = 0.0, 0.0            # misclassified
    certified[5:8] = attacked[5:8]                    # as tight as it gets: ratio 1
    certified[8:11] = 0.0                             # correct, but certified at no ε
    expected = torch.tensor([math.nan if a == 0 else c / a for c, a in zip(certified.tolist(), attacked.tolist())],
                            dtype=torch.float64)
    try:
        got = torch.as_tensor(gap(certified.clone(), attacked.clone()), dtype=torch.float64)
    except ValueError:
        return _report("certification gap", False, "ValueError on possible pairs: every certified radius here is ≤ "
                       "its attack radius")
    if got.shape != expected.shape or not bool((got.isnan() == expected.isnan()).all()):
        return _report("certification gap", False, "NaN exactly where the image is misclassified (attack radius 0)")
    ok = ~expected.isnan()
    if not _close(got[ok], expected[ok], 1e-9):
        return _report("certification gap", False, "the gap is certified / attack radius, in [0, 1]")
    for i, (c, a) in {12: (0.3, 0.2), 0: (0.1, 0.0)}.items():
        bad_c, bad_a = certified.clone(), attacked.clone()
        bad_c[i], bad_a[i] = c, a
        try:
            gap(bad_c, bad_a)
        except ValueError:
            continue
        return _report("certification gap", False, f"image {i} has certified radius {c} > attack radius {a}: a "
                       "certificate an attack broke — raise ValueError")
    return _report("certification gap", True)


# ----------------------------------------------------------------------------- 10
def check_kendall_tau(kendall_tau) -> bool | None:
    """10: ``kendall_tau(x, y)`` = Kendall's τ_b of two 1-D arrays, ties included (scipy.stats.kendalltau)."""
    import numpy as np
    from scipy import stats

    if _unanswered("Kendall's tau", kendall_tau):
        return None
    rng = np.random.default_rng(10)
    for n, ties in ((6, False), (25, False), (25, True), (40, True)):
        x, y = rng.normal(size=n), rng.normal(size=n) + rng.normal(size=n)
        if ties:
            x, y = np.round(x), np.round(2 * y)
        expected = stats.kendalltau(x, y, variant="b").statistic
        got = kendall_tau(x.copy(), y.copy())
        if not math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-12):
            why = "tied pairs count in neither n_c nor n_d, and shrink the denominator" if ties else \
                "τ = (concordant − discordant) / (n(n − 1)/2) without ties"
            return _report("Kendall's tau", False, f"{n} pairs{' with ties' if ties else ''}: got {float(got):.4f}, "
                           f"expected {expected:.4f} ({why})")
    return _report("Kendall's tau", True)


def check_top_k_overlap(top_k_overlap) -> bool | None:
    """10: ``top_k_overlap(metric, target, k)`` = |top-k by metric ∩ top-k by target| / k (no ties)."""
    import numpy as np

    if _unanswered("top-k overlap", top_k_overlap):
        return None
    rng = np.random.default_rng(11)
    for n, k in ((20, 5), (50, 10), (30, 1), (12, 12)):
        metric, target = rng.normal(size=n), rng.normal(size=n)
        expected = len(set(np.argsort(-metric)[:k]) & set(np.argsort(-target)[:k])) / k
        got = top_k_overlap(metric.copy(), target.copy(), k)
        if not math.isclose(float(got), expected, abs_tol=1e-12):
            return _report("top-k overlap", False, f"n={n}, k={k}: got {float(got):.3f}, expected {expected:.3f} "
                           "(the k largest values of each, not the k smallest)")
    return _report("top-k overlap", True)
