"""The empirical side of certification: what the network does inside the ball. ``falsify_margin``
and ``ball_outputs`` sample it (every sound bound contains what they find); ``attack_radius`` is the
smallest radius at which PGD succeeds, an upper bound of the true radius, as a certified radius is a
lower one; ``certification_gap`` = certified / PGD radius."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..attacks import ascent_direction, check_count, check_eps, check_norm, pgd, project_to_ball, random_point
from .radius import whole_box_radius


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…,) f_y − max_{t≠y} f_t of logits (…, K)."""
    true = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.expand(logits.shape[:-1]).unsqueeze(-1), -math.inf)
    return true - others.amax(-1)


def ball_outputs(model: nn.Module, x: torch.Tensor, eps, norm="inf", n: int = 64,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, B, K) outputs of ``model`` at n uniform random points of each sample's ε-ball ∩ [0, 1]ⁿ:
    what every output bound must contain."""
    norm = check_norm(norm)
    eps_t = check_eps(eps, x.shape[0], x)
    n = check_count("n", n)
    with torch.no_grad():
        return torch.stack([model(random_point(x, eps_t, norm, generator)) for _ in range(n)])


def falsify_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, norm="inf", n_random: int = 32,
                   steps: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) the smallest margin f_y(x') − max_{t≠y} f_t(x') found in the ε-ball ∩ [0, 1]ⁿ: over
    ``n_random`` random points, then ``steps`` steps of projected descent on the margin (step
    2.5·ε/steps, sign steps for ℓ∞, normalised ones for ℓ2) from the best of them. An upper estimate
    of the true minimum, so a sound ``margin_lower_bound`` never exceeds it (and a negative value is a
    real counterexample)."""
    norm = check_norm(norm)
    y = torch.as_tensor(y, device=x.device)
    eps_t = check_eps(eps, x.shape[0], x)
    steps = check_count("steps", steps)
    n_random = check_count("n_random", n_random)
    with torch.no_grad():
        best_m = margins(model(x), y)
        best_x = x.clone()
        for _ in range(n_random):
            xr = random_point(x, eps_t, norm, generator)
            m = margins(model(xr), y)
            better = m < best_m
            best_m, best_x = torch.where(better, m, best_m), torch.where(better.view(-1, 1, 1, 1), xr, best_x)
    xa, step = best_x, 2.5 * eps_t / steps
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(margins(model(xa), y).sum(), xa)
        with torch.no_grad():
            xa = project_to_ball(xa - step * ascent_direction(grad, norm), x, eps_t, norm)
            m = margins(model(xa), y)
            best_m = torch.minimum(best_m, m)
    return best_m


def attack_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm="inf", eps_max: float | None = None,
                  steps: int = 20, restarts: int = 2, rtol: float = 0.05, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """(B,) the smallest radius at which PGD (``rnas_lib.attacks.pgd``, ``steps`` steps, ``restarts``
    random starts) finds an adversarial example, to within ``rtol`` (relative), by bisection per
    sample on [0, eps_max]: an *upper* bound of the true robustness radius, as a certified radius is
    a lower one. 0 for a misclassified sample; eps_max when PGD fails even there (a cap)."""
    norm = check_norm(norm)
    if eps_max is None:
        eps_max = whole_box_radius(norm, x.shape[1:])
    y = torch.as_tensor(y, device=x.device)
    with torch.no_grad():
        correct = model(x).argmax(1) == y

    def broken(eps):
        x_adv = pgd(model, x, y, eps, norm, steps, restarts=restarts, generator=generator)
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    lo, hi = torch.zeros(len(x), dtype=x.dtype, device=x.device), torch.full((len(x),), float(eps_max), dtype=x.dtype,
                                                                                device=x.device)
    capped = ~broken(hi)
    for _ in range(60):
        if not bool(((hi - lo > rtol * hi) & correct & ~capped).any()):
            break
        mid = torch.where(lo > 0, (lo * hi).sqrt(), hi / 8)
        b = broken(mid)
        hi, lo = torch.where(b, mid, hi), torch.where(b, lo, mid)
    return torch.where(correct, hi, torch.zeros_like(hi))


def certification_gap(certified: torch.Tensor, attacked: torch.Tensor) -> torch.Tensor:
    """(B,) certified radius / PGD radius per image, in [0, 1] for every sound certificate (the
    closer to 1, the tighter the verifier); NaN where the image is misclassified (both are 0)."""
    gap = certified / attacked
    return torch.where(attacked > 0, gap, torch.full_like(gap, math.nan))
