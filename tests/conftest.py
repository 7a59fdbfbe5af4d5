import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path_factory, monkeypatch):
    """Every test writes its run folders into a temporary directory, never into runs/."""
    monkeypatch.setenv("RNAS_RUNS_DIR", str(tmp_path_factory.getbasetemp() / "runs"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with real MNIST / CIFAR-10 subsets (RNAS_DATA_ROOT, set by the Makefile)."""
    root = Path(os.environ.get("RNAS_DATA_ROOT") or SHARED_DATA)
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(f"real MNIST data not found under {root}; set RNAS_DATA_ROOT to a folder with MNIST/raw")
    return root
