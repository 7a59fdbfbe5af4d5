"""Adversarial attacks for game-based evaluation: FGSM and PGD written here, C&W-ℓ2 and AutoAttack
through adversarial-robustness-toolbox (ART).

Threat model. An attacker may replace an image x (pixels in [0, 1]) by any x' with
‖x' − x‖_p ≤ ε (p = ∞ or 2, ε in pixel units) and x' ∈ [0, 1]ⁿ; the model is attacked *including*
its Normalize layer, so ε means the same thing for every dataset statistic. Untargeted attacks
maximise the cross-entropy L(x') = CE(f(x'), y).

FGSM (Goodfellow et al. 2015), one step of size ε:
    ℓ∞:  x' = clip₀¹(x + ε·sign ∇ₓL)          ℓ2:  x' = clip₀¹(x + ε·∇ₓL / ‖∇ₓL‖₂)
PGD (Madry et al. 2018), ``steps`` steps of size α from x⁰ = x (or a uniform point of the ball):
    x^{k+1} = clip₀¹(Π_ε(x^k + α·s(∇L(x^k)))),  s = sign (ℓ∞) or g/‖g‖₂ (ℓ2),
Π_ε the Euclidean projection onto the ball around x (ℓ∞: clamp δ to [−ε, ε]; ℓ2: δ·min(1, ε/‖δ‖₂)).
Clipping after the projection keeps x' in the ball: it only moves coordinates toward x ∈ [0, 1]ⁿ.
Default α = 2.5·ε/steps (Madry's choice: the iterate can cross the ball and come back).
With ``restarts`` R > 1, R random starts are run and each sample keeps its worst case: an example
that is misclassified beats one that is not; among equals, the larger loss wins.

C&W-ℓ2 (Carlini & Wagner 2017) is a *minimum-norm* attack: it searches the smallest δ that flips
the label, so it has no ε. A sample counts as robust at ε when its C&W example is still classified
correctly or lies farther than ε from x.
AutoAttack (Croce & Hein 2020) runs an ensemble in sequence, each attack on the samples no earlier
one broke. ART's default list (APGD-CE and APGD-DLR with 100 iterations × 5 restarts, DeepFool,
Square with 5,000 queries × 5 restarts) takes minutes per image batch on a CPU; rnas's default
for evaluation is APGD-CE + APGD-DLR with ``steps`` iterations and ``restarts`` restarts, and
``components`` adds "deepfool" or "square". The number is a weaker AutoAttack than the published
one unless the full list and budgets are used; records state the list.

Robust accuracy at ε = the fraction of samples classified correctly *both* clean and attacked.
Every attack puts the model in eval mode (BatchNorm running statistics, no drop path) and puts each
submodule back in its former mode afterwards.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import TensorData
from .devices import model_device
from .display import progress as progress_bar

NORMS = ("inf", 2)
ATTACKS = ("fgsm", "pgd", "cw", "autoattack")
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-dlr", "deepfool", "square")
#: default settings of each attack in ``evaluate`` (override per attack with a dict spec)
DEFAULTS = {
    "fgsm": {},
    "pgd": {"steps": 20, "step_size": None, "rel_step_size": 2.5, "restarts": 1, "random_start": True},
    "cw": {"steps": 20, "binary_search_steps": 5, "learning_rate": 0.05, "initial_const": 0.1, "confidence": 0.0},
    "autoattack": {"steps": 20, "restarts": 1, "components": ("apgd-ce", "apgd-dlr"), "square_queries": 500},
}


# --------------------------------------------------------------------------- argument checks
def check_norm(norm) -> str | int:
    """'inf' or 2 from the spellings 'inf', 'linf', math.inf, 2, '2', 'l2'."""
    if isinstance(norm, str):
        norm = norm.lower()
    if norm in ("inf", "linf", math.inf):
        return "inf"
    if norm in (2, "2", "l2"):
        return 2
    raise ValueError(f"unknown norm {norm!r}; allowed: 'inf' (ℓ∞) or 2 (ℓ2)")


def check_eps(eps, batch: int, like: torch.Tensor) -> torch.Tensor:
    eps_t = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if eps_t.dim() > 1 or (eps_t.dim() == 1 and eps_t.numel() != batch):
        raise ValueError(f"eps must be a number or one value per sample ({batch},), got shape {tuple(eps_t.shape)}")
    if not bool(torch.isfinite(eps_t).all()) or bool((eps_t < 0).any()):
        raise ValueError(f"eps must be finite and ≥ 0 (a radius in pixel units, e.g. 0.1), got {eps}")
    return eps_t.expand(batch).reshape(batch, 1, 1, 1)


def check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)


def check_images(x, clip=(0.0, 1.0), name: str = "x") -> torch.Tensor:
    """``x`` if it is a (B, C, H, W) tensor of finite pixels inside the clip box ``clip`` = (lo, hi);
    else one ValueError naming what is wrong. Attacks and certificates are only meaningful there:
    outside [0, 1] (0–255 pixels, or images already normalised) the threat ball is clipped to a
    box that does not contain x, and a NaN compares false with every bound."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be a (B, C, H, W) tensor of pixels, got {type(x).__name__} "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}")
    lo, hi = (float(c) for c in clip)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"the clip box must be two finite numbers lo < hi, got {clip!r}")
    if not x.numel():
        return x
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or ±inf), the first at index {first}; "
                         f"attacks and certificates need finite pixels in [{lo:g}, {hi:g}]")
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < lo or x_max > hi:
        raise ValueError(f"{name} must hold pixels in [{lo:g}, {hi:g}] (the model normalises them itself), got values "
                         f"in [{x_min:.4g}, {x_max:.4g}]; divide 0–255 images by 255, and pass images before "
                         "any normalisation")
    return x


def _check_inputs(x, y):
    check_images(x)
    y = torch.as_tensor(y, device=x.device)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must hold one label per image, shape ({x.shape[0]},), got {tuple(y.shape)}")
    return y.long()


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run a block with ``model`` in eval mode; restore every submodule's former mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


# --------------------------------------------------------------------------- FGSM and PGD
def _loss_grad(model, x, y) -> torch.Tensor:
    """∇ₓ Σᵢ CE(f(xᵢ), yᵢ): per-sample gradients (the sum keeps them independent of the batch size)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def ascent_direction(grad: torch.Tensor, norm) -> torch.Tensor:
    """The steepest-ascent unit step of the norm: sign(g) (ℓ∞) or g/‖g‖₂ (ℓ2)."""
    if norm == "inf":
        return grad.sign()
    return grad / _l2(grad).clamp_min(1e-12)


def project_to_ball(x_adv, x, eps, norm) -> torch.Tensor:
    """clip₀¹(x + Π_ε(x_adv − x))."""
    delta = x_adv - x
    if norm == "inf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        delta = delta * torch.clamp(eps / _l2(delta).clamp_min(1e-12), max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_point(x, eps, norm, generator) -> torch.Tensor:
    """A uniform sample of the ball around x (then clipped to [0, 1])."""
    if norm == "inf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        delta = (2 * u - 1) * eps
    else:
        g = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        d = x[0].numel()
        r = torch.rand((x.shape[0], 1, 1, 1), generator=generator, dtype=x.dtype).to(x.device) ** (1.0 / d)
        delta = g / _l2(g).clamp_min(1e-12) * r * eps
    return (x + delta).clamp(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf") -> torch.Tensor:
    """The fast gradient sign (ℓ∞) / fast gradient (ℓ2) example: one step of size ε up the loss."""
    norm = check_norm(norm)
    y = _check_inputs(x, y)
    eps = check_eps(eps, x.shape[0], x)
    with eval_mode(model):
        grad = _loss_grad(model, x, y)
    return (x + eps * ascent_direction(grad, norm)).clamp(0.0, 1.0).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", steps: int = 20,
        step_size=None, random_start: bool = True, restarts: int = 1,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient ascent on CE inside the ε-ball ∩ [0, 1]ⁿ; the worst case over restarts.

    step_size: α in pixel units (a number or one per sample); None gives 2.5·ε/steps.
    generator: a CPU torch.Generator for the random starts (None: torch's global generator).
    """
    norm = check_norm(norm)
    y = _check_inputs(x, y)
    eps = check_eps(eps, x.shape[0], x)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    if step_size is None:
        alpha = 2.5 * eps / steps
    else:
        alpha = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
        if not bool(torch.isfinite(alpha).all()) or bool((alpha <= 0).any()):
            raise ValueError(f"step_size must be > 0 (pixel units) or None for 2.5·eps/steps, got {step_size}")
        alpha = alpha.expand(x.shape[0]).reshape(-1, 1, 1, 1)
    x = x.detach()
    best = x.clone()
    best_wrong = torch.zeros(len(y), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(y),), -math.inf, dtype=x.dtype, device=x.device)
    with eval_mode(model):
        for _ in range(restarts if random_start else 1):
            x_adv = random_point(x, eps, norm, generator) if random_start else x.clone()
            for _ in range(steps):
                x_adv = project_to_ball(x_adv + alpha * ascent_direction(_loss_grad(model, x_adv, y), norm), x, eps, norm)
            with torch.no_grad():
                logits = model(x_adv)
            loss = F.cross_entropy(logits, y, reduction="none")
            wrong = logits.argmax(1) != y
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
            best[better], best_wrong[better], best_loss[better] = x_adv[better], wrong[better], loss[better]
    return best


# --------------------------------------------------------------------------- through ART
def art_classifier(model: nn.Module, x: torch.Tensor, num_classes: int | None = None):
    """ART's PyTorchClassifier around ``model`` (logits, CE loss, inputs clipped to [0, 1])."""
    from art.estimators.classification import PyTorchClassifier

    if num_classes is None:
        num_classes = _num_classes(model)
    device = model_device(model)
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the number of classes of {type(model).__name__}; pass num_classes")
    return linears[-1].out_features


def _to_numpy(x):
    return x.detach().cpu().numpy().astype(np.float32)


def carlini_wagner_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 20,
                      binary_search_steps: int = 5, learning_rate: float = 0.05, initial_const: float = 0.1,
                      confidence: float = 0.0, batch_size: int = 128) -> torch.Tensor:
    """ART's CarliniL2Method (untargeted): a small-ℓ2 example per image (x itself where none was found)."""
    from art.attacks.evasion import CarliniL2Method

    y = _check_inputs(x, y)
    steps = check_count("steps", steps)
    binary_search_steps = check_count("binary_search_steps", binary_search_steps)
    with eval_mode(model):
        attack = CarliniL2Method(art_classifier(model, x), confidence=confidence, targeted=False,
                                 learning_rate=learning_rate, binary_search_steps=binary_search_steps,
                                 max_iter=steps, initial_const=initial_const, batch_size=batch_size, verbose=False)
        x_adv = attack.generate(_to_numpy(x), y.cpu().numpy())
    return torch.from_numpy(x_adv).to(x.device, x.dtype)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", steps: int = 20,
               restarts: int = 1, components=("apgd-ce", "apgd-dlr"), square_queries: int = 500,
               batch_size: int = 128) -> torch.Tensor:
    """ART's AutoAttack with the listed components (see the module docstring for the budgets)."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, DeepFool, SquareAttack

    norm = check_norm(norm)
    y = _check_inputs(x, y)
    steps = check_count("steps", steps)
    restarts = check_count("restarts", restarts)
    eps = float(eps) if np.ndim(eps) == 0 else eps
    if not isinstance(eps, float) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be one finite number ≥ 0 for autoattack, got {eps!r}")
    components = tuple(components)
    unknown = [c for c in components if c not in AUTOATTACK_COMPONENTS]
    if unknown or not components:
        raise ValueError(f"unknown AutoAttack components {unknown or components}; allowed: "
                         f"{', '.join(AUTOATTACK_COMPONENTS)}")
    if eps == 0:
        return x.detach().clone()
    p = np.inf if norm == "inf" else 2
    with eval_mode(model):
        clf = art_classifier(model, x)
        make = {
            "apgd-ce": lambda: AutoProjectedGradientDescent(clf, norm=p, eps=eps, eps_step=2 * eps, max_iter=steps,
                                                            nb_random_init=restarts, batch_size=batch_size,
                                                            loss_type="cross_entropy", verbose=False),
            "apgd-dlr": lambda: AutoProjectedGradientDescent(clf, norm=p, eps=eps, eps_step=2 * eps, max_iter=steps,
                                                             nb_random_init=restarts, batch_size=batch_size,
                                                             loss_type="difference_logits_ratio", verbose=False),
            "deepfool": lambda: DeepFool(clf, max_iter=steps, epsilon=1e-3, nb_grads=10, batch_size=batch_size,
                                         verbose=False),
            "square": lambda: SquareAttack(clf, norm=p, eps=eps, max_iter=square_queries, p_init=0.8,
                                           nb_restarts=restarts, batch_size=batch_size, verbose=False),
        }
        attack = AutoAttack(clf, norm=p, eps=eps, eps_step=2 * eps, attacks=[make[c]() for c in components],
                            batch_size=batch_size)
        x_adv = attack.generate(_to_numpy(x), y.cpu().numpy())
    return torch.from_numpy(x_adv).to(x.device, x.dtype)


# --------------------------------------------------------------------------- evaluation
def attack_spec(spec, norm="inf") -> dict:
    """A full attack description from a name ("pgd") or a dict ({"name": "pgd", "steps": 50, …})."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(ATTACKS)}")
    unknown = set(spec) - set(DEFAULTS[name]) - {"norm"}
    if unknown:
        raise ValueError(f"attack {name!r} has no settings {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(set(DEFAULTS[name]) | {'norm'}))}")
    full = {"name": name, "norm": check_norm(spec.pop("norm", norm)), **DEFAULTS[name], **spec}
    if name == "cw" and full["norm"] != 2:
        raise ValueError("the C&W attack here is the ℓ2 one; give it norm=2")
    for key in ("steps", "restarts", "binary_search_steps"):
        if key in full:
            check_count(f"{name} {key}", full[key])
    if "components" in full:
        full["components"] = list(full["components"])
    return full


def _adversarial(model, x, y, eps, spec, generator):
    name = spec["name"]
    if name == "fgsm":
        return fgsm(model, x, y, eps, spec["norm"])
    if name == "pgd":
        step = spec["step_size"] if spec["step_size"] is not None else spec["rel_step_size"] * eps / spec["steps"]
        if step == 0:  # ε = 0: nothing to move
            return x
        return pgd(model, x, y, eps, spec["norm"], spec["steps"], step, spec["random_start"], spec["restarts"],
                   generator)
    return autoattack(model, x, y, eps, spec["norm"], spec["steps"], spec["restarts"], spec["components"],
                      spec["square_queries"])


def _record(spec, eps, n, correct) -> dict:
    steps = spec.get("steps", 1)
    if spec["name"] == "pgd":
        step = spec["step_size"] if spec["step_size"] is not None else spec["rel_step_size"] * eps / steps
    elif spec["name"] == "fgsm":
        step = eps
    else:
        step = None
    record = {"attack": spec["name"], "norm": spec["norm"], "eps": float(eps), "steps": steps,
              "step_size": None if step is None else float(step), "restarts": spec.get("restarts", 1),
              "n": int(n), "accuracy": correct / n if n else float("nan")}
    extra = {k: v for k, v in spec.items() if k not in ("name", "norm", "steps", "step_size", "restarts",
                                                           "rel_step_size")}
    if spec["name"] == "autoattack" and "square" not in spec["components"]:
        extra.pop("square_queries")
    if extra:
        record["options"] = extra
    return record


def evaluate(model: nn.Module, data: TensorData, attacks=("fgsm", "pgd"), eps_grid=(0.0, 0.05, 0.1, 0.2),
             norm="inf", batch_size: int = 256, limit: int | None = None, seed: int = 0,
             progress: bool = True) -> list[dict]:
    """Robust accuracy of ``model`` under each attack at each ε, as JSON-ready records.

    attacks: names ("fgsm", "pgd", "cw", "autoattack") or dicts with "name" and settings (see
    ``DEFAULTS``; "norm" overrides ``norm``). limit: evaluate the first ``limit`` samples.
    Each record: attack, norm, eps, steps, step_size, restarts, n (images), accuracy (and options).
    """
    specs = [attack_spec(a, norm) for a in attacks]
    if not specs:
        raise ValueError("attacks is empty; give at least one of " + ", ".join(ATTACKS))
    eps_grid = [float(e) for e in eps_grid]
    bad = [e for e in eps_grid if not (math.isfinite(e) and e >= 0)]
    if bad or not eps_grid:
        raise ValueError(f"eps_grid must be a non-empty list of finite radii ≥ 0, got {bad or eps_grid}")
    if limit is not None:
        data = data.subset(slice(0, check_count("limit", limit)))
    device = model_device(model)
    n = len(data)
    generator = torch.Generator().manual_seed(seed)
    jobs = [(s, e) for s in specs for e in (eps_grid if s["name"] != "cw" else [None])]
    chunks = range(0, n, batch_size)
    bar = progress_bar(total=len(jobs) * len(chunks), desc="attacks", disable=not progress, unit="batch")
    records = []
    with eval_mode(model):
        clean = []
        with torch.no_grad():
            for start in chunks:
                x, y = data.x[start:start + batch_size].to(device), data.y[start:start + batch_size].to(device)
                clean.append(model(x).argmax(1) == y)
        for spec, eps in jobs:
            bar.set_postfix(attack=spec["name"], eps=eps)
            if spec["name"] == "cw":  # minimum-norm: one run serves every ε
                dist, still = [], []
                for i, start in enumerate(chunks):
                    x, y = data.x[start:start + batch_size].to(device), data.y[start:start + batch_size].to(device)
                    x_adv = carlini_wagner_l2(model, x, y, spec["steps"], spec["binary_search_steps"],
                                              spec["learning_rate"], spec["initial_const"], spec["confidence"])
                    with torch.no_grad():
                        still.append(model(x_adv).argmax(1) == y)
                    dist.append(_l2(x_adv - x).flatten())
                    bar.update()
                dist, still, ok = torch.cat(dist), torch.cat(still), torch.cat(clean)
                for e in eps_grid:
                    correct = int((ok & (still | (dist > e))).sum())
                    records.append(_record(spec, e, n, correct))
                continue
            correct = 0
            for i, start in enumerate(chunks):
                x, y = data.x[start:start + batch_size].to(device), data.y[start:start + batch_size].to(device)
                x_adv = _adversarial(model, x, y, eps, spec, generator)
                with torch.no_grad():
                    correct += int((clean[i] & (model(x_adv).argmax(1) == y)).sum())
                bar.update()
            records.append(_record(spec, eps, n, correct))
    bar.close()
    return records

