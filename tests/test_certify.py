"""The certify package's own pieces: the registry of trace rules and the settings object."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from rnas_lib.bounds import output_bounds
from rnas_lib.certify import trace as trace_module
from rnas_lib.certify.primitives import ChannelAffine
from rnas_lib.certify.settings import Settings
from rnas_lib.certify.trace import register_trace_rule, supported, trace


class Doubling(nn.Module):
    """y = 2·z: a module no rule of the package knows."""

    def forward(self, z):
        return 2 * z


def _nets():
    torch.manual_seed(0)
    conv, head = nn.Conv2d(1, 3, 3), nn.Linear(3 * 4 * 4, 4)
    doubled = nn.Conv2d(1, 3, 3)
    with torch.no_grad():  # the same network with the doubling folded into the convolution
        doubled.weight.copy_(2 * conv.weight)
        doubled.bias.copy_(2 * conv.bias)
    with_module = nn.Sequential(conv, Doubling(), nn.ReLU(), nn.Flatten(), head).double().eval()
    folded = nn.Sequential(doubled, nn.ReLU(), nn.Flatten(), head).double().eval()
    return with_module, folded


@pytest.fixture
def private_registry(monkeypatch):
    """Rules registered in a test stay in that test."""
    monkeypatch.setattr(trace_module, "TRACE_RULES", dict(trace_module.TRACE_RULES))


def test_a_registered_rule_traces_a_new_module(private_registry):
    """A rule for a new module type makes it boundable: its bounds are those of the network with the
    module folded into the layer before it, for every method."""
    with_module, folded = _nets()
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="no rule for module Doubling"):
        output_bounds(with_module, x, 0.05)

    @register_trace_rule(Doubling, "Doubling (y = 2z)")
    def trace_doubling(g, m, z):
        C = g.shape(z)[0]
        return g.add(ChannelAffine(torch.full((C,), 2.0, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)), z)

    assert "Doubling (y = 2z)" in supported()
    torch.testing.assert_close(trace(with_module, x).values[-1], with_module(x), rtol=0, atol=1e-12)
    for method in ("ibp", "crown-ibp", "crown-forward", "crown"):
        for a, b in zip(output_bounds(with_module, x, 0.05, method=method), output_bounds(folded, x, 0.05, method=method)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_subclass_uses_its_parents_rule_unless_it_registers_its_own(private_registry):
    class LoggedReLU(nn.ReLU):
        pass

    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    _, folded = _nets()
    net = nn.Sequential(folded[0], LoggedReLU(), *folded[2:])
    assert [type(op).__name__ for op in trace(net, x).ops[1:]] == ["Conv", "ReLU", "Flatten", "Linear"]
    register_trace_rule(LoggedReLU)(lambda g, m, z: z)  # its own rule: the identity
    assert [type(op).__name__ for op in trace(net, x).ops[1:]] == ["Conv", "Flatten", "Linear"]


def test_an_unknown_module_names_what_is_supported():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="no rule for module Tanh") as info:
        trace(net, torch.rand(1, 1, 4, 4))
    for name in ("Conv2d", "ReLU", "MaxPool2d", "Network", "SearchNetwork", "register_trace_rule"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="nn.Module subclass"):
        register_trace_rule(torch.Tensor)


def test_settings_are_frozen_and_normalised():
    s = Settings(norm="linf", method="crown-ibp", alpha_steps=3)
    assert s.norm == "inf" and Settings(norm="l2").norm == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.method = "ibp"
    assert dataclasses.replace(s, rtol=0.1).rtol == 0.1 and s.rtol == 0.01


@pytest.mark.parametrize("field, value, message", [
    ("method", "deeppoly", "unknown bound method 'deeppoly'"),
    ("relu_slope", "zero", "unknown relu_slope 'zero'"),
    ("norm", 1, "norm"),
    ("clip", (1.0, 0.0), "clip must be None or"),
    ("clip", (0.0,), "clip must be None or"),
    ("alpha_steps", 0, "alpha_steps must be an integer ≥ 1"),
    ("alpha_steps", 2.5, "alpha_steps must be an integer ≥ 1"),
    ("tol", -1.0, "tol must be a number ≥ 0"),
    ("rtol", "0.1", "rtol must be a number ≥ 0"),
    ("eps_max", 0.0, "eps_max must be a positive number"),
    ("eps_max", True, "eps_max must be a positive number"),
])
def test_settings_refuse_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        Settings(**{field: value})


def test_settings_refuse_a_search_that_never_stops():
    with pytest.raises(ValueError, match="tol and rtol cannot both be 0"):
        Settings(tol=0.0, rtol=0.0)
