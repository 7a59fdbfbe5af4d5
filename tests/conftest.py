import os
from pathlib import Path

import pytest
import torch

from rnas_lib.data import default_data_root, load_dataset



@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path_factory, monkeypatch):
    """Every test writes its run folders into a temporary directory, never into runs/."""
    monkeypatch.setenv("RNAS_RUNS_DIR", str(tmp_path_factory.getbasetemp() / "runs"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """A folder with real MNIST: RNAS_DATA_ROOT (the Makefile points it at the shared subset when
    present), else the project's data/ folder, where MNIST is downloaded if the machine is online."""
    root = Path(os.environ["RNAS_DATA_ROOT"]) if os.environ.get("RNAS_DATA_ROOT") else default_data_root()
    try:
        load_dataset("mnist", False, root, limit=1)
    except FileNotFoundError as err:
        pytest.fail(f"these tests need real MNIST: {err}")
    return root


@pytest.fixture(scope="module")
def one_thread_float64():
    """float64 and one thread for a whole test module (exact-arithmetic checks); restored afterwards."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
