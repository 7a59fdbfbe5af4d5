"""Every exercise's solution (solutions/exNN.py) passes the check the notebook runs, and the
checks reject a wrong answer and accept an unanswered one (None) without failing the notebook."""
import importlib.util

import numpy as np
import pytest
import torch

from rnas_lib import PROJECT_ROOT, exercises

#: notebook → (check, the solution's name for the answer)
EXERCISES = {
    "00": [("check_edge_count", "edges"), ("check_alpha_loss", "alpha_loss")],
    "01": [("check_project_linf", "project"), ("check_matched_radius", "radius")],
    "02": [("check_sep_conv_params", "params"), ("check_mixed_op", "mixed")],
    "03": [("check_ibp_avg_pool", "ibp_avg_pool"), ("check_fast_lin_slope", "fast_lin_lower_slope")],
    "04": [("check_first_order_change", "change"), ("check_worst_direction", "direction")],
    "05": [("check_alpha_entropy", "entropy"), ("check_hvp", "hvp")],
    "06": [("check_cosine_lr", "lr"), ("check_drop_path", "drop")],
    "07": [("check_momentum_pgd", "attack"), ("check_minimum_norm_accuracy", "accuracy")],
    "08": [("check_certified_fraction", "fraction_certified"), ("check_certification_gap", "gap_ratio")],
    "10": [("check_kendall_tau", "kendall_tau"), ("check_top_k_overlap", "top_k_overlap")],
}


def solution(number):
    path = PROJECT_ROOT / "solutions" / f"ex{number}.py"
    spec = importlib.util.spec_from_file_location(f"solution_{number}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("number, check, answer",
                         [(n, c, a) for n, pairs in EXERCISES.items() for c, a in pairs])
def test_solution_passes_its_check(number, check, answer, capsys):
    assert getattr(exercises, check)(getattr(solution(number), answer)) is True
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("check", sorted({c for pairs in EXERCISES.values() for c, _ in pairs}))
def test_unanswered_is_not_an_error(check, capsys):
    assert getattr(exercises, check)(None) is None
    assert "not answered yet" in capsys.readouterr().out


WRONG = {
    "check_edge_count": lambda steps: 2 * steps,
    "check_alpha_loss": lambda ce, r, gamma: ce + gamma * r,
    "check_project_linf": lambda x_adv, x, eps: x_adv.clamp(0, 1),
    "check_matched_radius": lambda n, eps: eps,
    "check_sep_conv_params": lambda k, C: k * k * C * C,
    "check_mixed_op": lambda outputs, alpha: outputs.mean(0),
    # count_include_pad=True (PyTorch's default), not DARTS' pool
    "check_ibp_avg_pool": lambda l, u: (torch.nn.functional.avg_pool2d(l, 3, 1, 1),
                                        torch.nn.functional.avg_pool2d(u, 3, 1, 1)),
    "check_fast_lin_slope": lambda l, u: -l / (u - l),   # sound (in [0, 1]) but not Fast-Lin's
    "check_first_order_change": lambda row, eps, norm: eps * row.norm(),
    "check_worst_direction": lambda row, eps, norm: eps * row.sign(),
    "check_alpha_entropy": lambda weights: float(-(weights * weights.log()).nan_to_num().sum(1).mean()),  # not / ln|O|
    # the step r = 0.01 not divided by ‖v‖
    "check_hvp": lambda grad_alpha, w, v: (grad_alpha(w + 0.01 * v) - grad_alpha(w - 0.01 * v)) / 0.02,
    "check_cosine_lr": lambda epoch, epochs, lr_max, lr_min: lr_max,
    "check_drop_path": lambda h, p, generator: h * (torch.rand(h.shape, generator=generator) >= p) / (1 - p),
    "check_momentum_pgd": lambda model, x, y, eps, steps, step_size, mu: x.clone(),
    "check_minimum_norm_accuracy": lambda clean_ok, still_ok, dist, eps: clean_ok.double().mean().item(),
    "check_certified_fraction": lambda radii, eps: float((radii > eps).mean()),   # radius = ε is certified
    "check_certification_gap": lambda certified, attacked: certified / attacked,  # never flags a broken certificate
    # τ_a: ties left in the denominator n(n − 1)/2
    "check_kendall_tau": lambda x, y: float(sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(len(x))
                                                for j in range(i + 1, len(x))) / (len(x) * (len(x) - 1) / 2)),
    "check_top_k_overlap": lambda metric, target, k: len(set(np.argsort(metric)[:k]) & set(np.argsort(target)[:k])) / k,
}


@pytest.mark.parametrize("check", sorted(WRONG))
def test_a_wrong_answer_is_rejected(check, capsys):
    assert getattr(exercises, check)(WRONG[check]) is False
    assert "✗" in capsys.readouterr().out
