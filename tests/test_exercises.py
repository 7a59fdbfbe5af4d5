"""Every exercise's solution (solutions/exNN.py) passes the check the notebook runs, and the
checks reject a wrong answer and accept an unanswered one (None) without failing the notebook."""
import importlib.util

import pytest
import torch

from rnas_lib import PROJECT_ROOT, exercises

#: notebook → (check, the solution's name for the answer)
EXERCISES = {
    "00": [("check_edge_count", "edges"), ("check_alpha_loss", "alpha_loss")],
    "01": [("check_project_linf", "project"), ("check_matched_radius", "radius")],
    "02": [("check_sep_conv_params", "params"), ("check_mixed_op", "mixed")],
    "04": [("check_first_order_change", "change"), ("check_worst_direction", "direction")],
    "06": [("check_cosine_lr", "lr"), ("check_drop_path", "drop")],
    "07": [("check_momentum_pgd", "attack"), ("check_minimum_norm_accuracy", "accuracy")],
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
    "check_first_order_change": lambda row, eps, norm: eps * row.norm(),
    "check_worst_direction": lambda row, eps, norm: eps * row.sign(),
    "check_cosine_lr": lambda epoch, epochs, lr_max, lr_min: lr_max,
    "check_drop_path": lambda h, p, generator: h * (torch.rand(h.shape, generator=generator) >= p) / (1 - p),
    "check_momentum_pgd": lambda model, x, y, eps, steps, step_size, mu: x.clone(),
    "check_minimum_norm_accuracy": lambda clean_ok, still_ok, dist, eps: clean_ok.double().mean().item(),
}


@pytest.mark.parametrize("check", sorted(WRONG))
def test_a_wrong_answer_is_rejected(check, capsys):
    assert getattr(exercises, check)(WRONG[check]) is False
    assert "✗" in capsys.readouterr().out
