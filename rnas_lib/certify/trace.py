"""Tracing a model into a BoundGraph, by a registry of trace rules.

A trace rule ``rule(g, module, z) -> node`` adds the nodes that compute ``module`` on node z of
the graph g (computing the clean activations as it goes) and returns the node of its output.
``register_trace_rule(Type)`` registers one; a module is traced by the rule of the first class of
its MRO that has one, so subclasses inherit their parent's rule unless they register their own.
The rules for the layers (torch.nn and rnas_lib.ops) are ``trace_layers``, those for whole
networks and their cells ``trace_networks``; the package registers both on import.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .graph import BoundGraph

#: module type → (name listed as supported, rule)
TRACE_RULES: dict[type, tuple[str, Callable]] = {}


def register_trace_rule(module_type: type, name: str | None = None):
    """Decorator: ``rule(g, module, z) -> node`` traces modules of ``module_type`` (and its subclasses
    without a rule of their own); ``name`` is how the unknown-module error lists it."""
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise ValueError(f"a trace rule is registered for an nn.Module subclass, got {module_type!r}")

    def register(rule: Callable) -> Callable:
        TRACE_RULES[module_type] = (name or module_type.__name__, rule)
        return rule

    return register


def supported() -> str:
    """The modules that have a trace rule, as the unknown-module error lists them."""
    return ", ".join(dict.fromkeys(name for name, _ in TRACE_RULES.values()))


def trace_module(g: BoundGraph, m: nn.Module, z: int) -> int:
    """Add ``m`` applied to node z to g by its trace rule; the node of its output."""
    for cls in type(m).__mro__:
        if cls in TRACE_RULES:
            return TRACE_RULES[cls][1](g, m, z)
    raise ValueError(f"bounds: no rule for module {type(m).__name__}; supported: {supported()} "
                     "(register_trace_rule adds one)")


def trace(model: nn.Module, x: torch.Tensor) -> BoundGraph:
    """The BoundGraph of ``model`` on the clean batch x (B, C, H, W)."""
    g = BoundGraph(x)
    trace_module(g, model, 0)
    return g
