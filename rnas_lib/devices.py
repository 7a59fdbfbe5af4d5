"""Where the heavy loops run.

``resolve_device(None)`` is the GPU when torch sees one, else the CPU. The tier-level entry points
(``run_search``, ``run_training``, ``trained_model``) search and train there and hand the model back
on the CPU, where ``load_dataset``'s tensors live. Runs are deterministic with a seed on the CPU;
on a GPU, some backward kernels (cuDNN's convolution weight gradients, max pooling) sum in no
fixed order, so two GPU runs can differ in the last digits and, through the argmax of α,
occasionally in the genotype.
"""
from __future__ import annotations

import torch
from torch import nn

ALLOWED = "None (the GPU when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:<index>'"


def resolve_device(device=None) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has; None picks the GPU if torch sees one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; allowed: {ALLOWED}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; allowed: {ALLOWED}")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine; "
                             "use 'cpu' or None (auto)")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device!r} asked for, but this machine has {count} GPU(s): "
                             f"use an index in 0..{count - 1}")
    return resolved


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters."""
    return next(model.parameters()).device
