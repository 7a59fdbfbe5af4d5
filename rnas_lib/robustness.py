"""Robustness terms R(model, x, y) that a robust search maximises (larger = more robust).

A search method ``m`` with a term minimises, at the architecture level,
    L_α = CE(f(x_val), y_val) − γ · R(f, x_val, y_val)
(and, if asked, L_w = CE(f(x_train), y_train) − γ_w · R(f, x_train, y_train) at the weight level).
``TERMS`` maps a method name to a factory: ``TERMS[m](**options)`` returns the callable R.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

RobustnessTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: method name → factory(**options) → R(model, x, y) (a differentiable scalar)
TERMS: dict[str, Callable[..., RobustnessTerm]] = {}
