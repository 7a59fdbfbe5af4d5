import os
from pathlib import Path

import pytest
import torch

from rnas_lib.data import default_data_root, load_dataset


def pytest_configure(config):
    """Under pytest-xdist, each worker (and the notebook kernels it starts) gets its share of the
    cores: workers × threads > cores makes PyTorch's OpenMP threads wait on each other, and the
    many small ops of the float64 checks then run 10–100× slower."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


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


@pytest.fixture(scope="session")
def tiny_network():
    """``build(genotype)`` → (net, x, y): the derived network of ``genotype`` at C=2, 3 cells, 4 classes on
    4×4 grey inputs, random weights and BatchNorm statistics (eval mode), six random inputs, and labels
    that are its own predictions (a network to certify and attack without training)."""
    from torch import nn

    from rnas_lib.network import Network

    def build(genotype):
        torch.manual_seed(0)
        net = Network(genotype, 2, 4, 3, in_channels=1, mean=[0.4], std=[0.3])
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.uniform_(0.05, 0.2)
        net.eval()
        x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = net(x).argmax(1)
        return net, x, y

    return build


@pytest.fixture
def interrupt_after_first_epoch(monkeypatch):
    """``interrupt(*args, **kwargs)``: ``rnas_lib.train.run_training(*args, **kwargs)`` stopped by a
    KeyboardInterrupt right after its first checkpoint is saved (a training cut off after one epoch)."""
    from rnas_lib import train as train_mod

    def interrupt(*args, **kwargs):
        real, calls = train_mod.save_checkpoint, []

        def save_then_die(*save_args):
            real(*save_args)
            calls.append(1)
            if len(calls) == 1:
                raise KeyboardInterrupt
        monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                train_mod.run_training(*args, **kwargs)
        finally:
            monkeypatch.setattr(train_mod, "save_checkpoint", real)

    return interrupt
