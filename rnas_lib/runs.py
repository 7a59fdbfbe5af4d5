"""Run folders keyed by their configuration, completion records, atomic JSON and checkpoints.

Everything generated goes under ``runs/<tier>/…`` in the project (or under ``RNAS_RUNS_DIR``).
A search or training run lives in ``runs/<tier>/<kind>/<label>-<key>/``, where ``key`` is a short
hash of the canonical JSON of the whole configuration that determines its result (stored beside
it as ``config.json``): another configuration gets another folder, so a run can only be resumed
with its own configuration. A run is finished only when its completion record ``complete.json``
exists; it is written last, and readers of results require it (``require_complete``).

Every file is written atomically: into a uniquely named temporary file in the same folder,
flushed and fsynced, then renamed over the target (``os.replace``), so a reader sees the old file
or the new one, never a part. Checkpoints are plain state dicts of tensors, numbers, strings,
lists and dicts, so they load with ``torch.load(weights_only=True)``: loading never executes code.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from . import PROJECT_ROOT

COMPLETE = "complete.json"


def runs_root() -> Path:
    return Path(os.environ.get("RNAS_RUNS_DIR") or PROJECT_ROOT / "runs")


def run_dir(tier: str, *parts: str) -> Path:
    """``runs/<tier>/<parts…>``, created if missing."""
    path = runs_root().joinpath(str(tier), *map(str, parts))
    path.mkdir(parents=True, exist_ok=True)
    return path


def canonical_json(config: dict) -> str:
    """``config`` as JSON with sorted keys and no spaces: equal configurations give equal text."""
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"a run configuration must be plain JSON (numbers, strings, lists, dicts): {err}") from None


def config_key(config: dict) -> str:
    """The first 10 hex digits of SHA-256 of ``canonical_json(config)``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:10]


def keyed_run_dir(tier: str, kind: str, label: str, config: dict) -> Path:
    """``runs/<tier>/<kind>/<label>-<config_key(config)>/`` with ``config.json``; created if missing."""
    path = run_dir(tier, kind, f"{label}-{config_key(config)}")
    check_run_config(path, config)
    return path


def start_run(path, config: dict, resume: bool = True) -> None:
    """Claim ``path`` for a run of ``config``: with ``resume``, store the configuration or check that
    the one stored there is the same (ValueError otherwise); without, start over (the old completion
    record is removed first)."""
    if resume:
        check_run_config(path, config)
        return
    (Path(path) / COMPLETE).unlink(missing_ok=True)
    save_json(config, Path(path) / "config.json")


def check_run_config(path, config: dict) -> None:
    """Store ``config`` in ``path/config.json``, or check that the one stored there is the same."""
    path = Path(path)
    stored_file = path / "config.json"
    if not stored_file.exists():
        save_json(config, stored_file)
        return
    stored = load_json(stored_file)
    if canonical_json(stored) != canonical_json(config):
        diff = {k: (stored.get(k), config.get(k)) for k in sorted(set(stored) | set(config))
                if stored.get(k) != config.get(k)}
        raise ValueError(f"the run folder {path} holds a run of another configuration (stored, given): {diff}; "
                         "use another out_dir, delete that folder, or pass resume=False to start over there")


def is_complete(path) -> bool:
    """Whether the run in ``path`` finished (its completion record exists)."""
    return (Path(path) / COMPLETE).exists()


def mark_complete(path, record: dict) -> Path:
    """Write the completion record of the run in ``path``: call it after every other file is written."""
    return save_json(record, Path(path) / COMPLETE)


def require_complete(path) -> dict:
    """The completion record of the run in ``path``; FileNotFoundError if the run did not finish."""
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(
            f"the run in {path} is not finished (no {COMPLETE}): it is still running or was interrupted; "
            "run it again with the same configuration to resume it"
        )
    return load_json(path / COMPLETE)


def _atomic_write(path, write) -> Path:
    """Write through ``write(file_object)`` into a unique temporary file beside ``path``, fsync it and
    rename it over ``path``: readers see the old file or the new one, never a part. On any error
    (or interruption) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def save_json(obj, path) -> Path:
    text = json.dumps(obj, indent=1, allow_nan=False)
    return _atomic_write(path, lambda f: f.write(text.encode()))


def load_json(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no JSON result at {path}; run the notebook or function that writes it first")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and rerun what writes it") from None


def save_checkpoint(state: dict, path) -> Path:
    return _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train or search first, or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(f"the checkpoint {path} is corrupt or not an rnas checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); delete it and rerun the run") from None
    if not isinstance(state, dict):
        raise ValueError(f"the checkpoint {path} holds a {type(state).__name__}, not an rnas state dict; "
                         "delete it and rerun the run")
    return state


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
        kernel_manager_class=_local_kernel_manager(),
    )
    return output


def _local_kernel_manager():
    """A kernel manager whose kernel talks over local (Unix-domain, IPC) sockets, not TCP: the
    kernel then needs no network port and warns of no unencrypted TCP traffic (ipykernel warns on
    every TCP start).

    jupyter_client names IPC sockets ``kernel-ipc-1`` … ``kernel-ipc-5`` relative to the working
    directory, so two kernels started at once from the same folder (two pytest workers, two Dask
    tasks) bind the same sockets and read each other's signed messages ("Invalid Signature").
    Each manager here gets its own private directory for its sockets, removed at shutdown."""
    import shutil

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):
            return os.path.join(tempfile.mkdtemp(prefix="rnas-kernel-"), "kernel")

        def cleanup_ipc_files(self) -> None:
            super().cleanup_ipc_files()
            folder = os.path.dirname(self.ip)
            if os.path.basename(folder).startswith("rnas-kernel-"):
                shutil.rmtree(folder, ignore_errors=True)

    return LocalKernelManager
