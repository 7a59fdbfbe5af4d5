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


NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def notebooks() -> list[Path]:
    """The workbook's notebooks, in reading order."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(notebook, tier: str = "smoke", parameters: dict | None = None, output=None) -> Path:
    """Execute a notebook with papermill (``tier`` and ``parameters`` injected); return the executed copy.

    The executed notebook goes to ``runs/<tier>/notebooks/<name>.ipynb`` unless ``output`` is given.
    """
    import papermill

    notebook = Path(notebook)
    if not notebook.exists():
        candidates = [p for p in notebooks() if p.stem.startswith(str(notebook))]
        if len(candidates) != 1:
            names = ", ".join(p.stem for p in notebooks())
            raise FileNotFoundError(f"no notebook {notebook}; the workbook has: {names}")
        notebook = candidates[0]
    output = Path(output) if output is not None else run_dir(tier, "notebooks") / notebook.name
    papermill.execute_notebook(
        str(notebook), str(output), parameters={"tier": tier, **(parameters or {})},
        cwd=str(notebook.parent), kernel_name="python3", progress_bar=False,
    )
    return output
