"""The traced network: a graph of primitive nodes with the clean activations."""
from __future__ import annotations

import torch

from .primitives import Const, MaxPool, ReLU, pair


class BoundGraph:
    """The network as primitive nodes; node 0 is the input. ``values[i]`` are the clean activations."""

    def __init__(self, x: torch.Tensor):
        self.ops: list = [None]
        self.inputs: list[tuple[int, ...]] = [()]
        self.values: list[torch.Tensor] = [x]
        self.shared: dict[tuple, int] = {}
        self.blocks: list[tuple[str, int, int]] = []  # (label, first node, output node) of stem and cells

    def add(self, op, *inputs: int) -> int:
        self.values.append(op.forward(*[self.values[i] for i in inputs]))
        self.ops.append(op)
        self.inputs.append(inputs)
        return len(self.ops) - 1

    def relu(self, z: int) -> int:
        """ReLU of node z (one node per input: a shared ReLU is relaxed once)."""
        if ("relu", z) not in self.shared:
            self.shared["relu", z] = self.add(ReLU(), z)
        return self.shared["relu", z]

    def maxpool(self, z: int, kernel, stride, padding) -> int:
        """Max pool of node z (one node per input and geometry, like ``relu``)."""
        key = ("maxpool", z, pair(kernel), pair(stride), pair(padding))
        if key not in self.shared:
            self.shared[key] = self.add(MaxPool(kernel, stride, padding), z)
        return self.shared[key]

    def block(self, label: str, first: int, out: int) -> int:
        """Record nodes first..out as one block (the stem or a cell) for ``block_widths``; returns out."""
        self.blocks.append((label, first, out))
        return out

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.values[i].shape[1:])

    def head(self, n: int) -> "BoundGraph":
        """The same network restricted to the first n samples: its clean activations, and in train
        mode still the BatchNorm statistics of the whole traced batch (held in the ops)."""
        if not 1 <= n <= self.values[0].shape[0]:
            raise ValueError(f"n must be in 1..{self.values[0].shape[0]} (the traced batch), got {n!r}")
        g = BoundGraph.__new__(BoundGraph)
        g.ops = [Const(op.value[:n]) if isinstance(op, Const) else op for op in self.ops]
        g.inputs, g.values, g.shared = self.inputs, [v[:n] for v in self.values], self.shared
        g.blocks = self.blocks
        return g

    @property
    def output(self) -> int:
        return len(self.ops) - 1
