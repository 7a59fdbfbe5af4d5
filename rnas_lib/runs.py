"""Run folders, JSON results and checkpoints.

Everything generated goes under ``runs/<tier>/…`` in the project (or under ``RNAS_RUNS_DIR``).
Checkpoints are plain state dicts of tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: loading never executes code from the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import PROJECT_ROOT


def runs_root() -> Path:
    return Path(os.environ.get("RNAS_RUNS_DIR") or PROJECT_ROOT / "runs")


def run_dir(tier: str, *parts: str) -> Path:
    """``runs/<tier>/<parts…>``, created if missing."""
    path = runs_root().joinpath(str(tier), *map(str, parts))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, write) -> Path:
    """Write to a temporary file and rename, so nothing is ever left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_json(obj, path) -> Path:
    text = json.dumps(obj, indent=1, allow_nan=False)
    return _atomic_write(path, lambda p: p.write_text(text))


def load_json(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no JSON result at {path}; run the notebook or function that writes it first")
    return json.loads(path.read_text())


def save_checkpoint(state: dict, path) -> Path:
    return _atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train or search first, or check the path")
    return torch.load(path, map_location=map_location, weights_only=True)
