"""Datasets as in-memory tensors of pixels in [0, 1] (normalisation is the model's first layer).

Registry (``name`` argument):
- ``digits``: scikit-learn's bundled UCI handwritten digits, 1,797 real 8×8 images (the embedded
  default; no download). A fixed seeded split gives 1,437 training and 360 test images.
- ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's datasets under ``data_root``; downloaded
  when the machine is online and ``download=True``.
- ``npz:<path>``: uint8 images (N,H,W) or (N,H,W,C) and integer labels, keys ``x_train``,
  ``y_train``, ``x_test``, ``y_test``.
- ``folder:<path>``: an ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) sub-folders,
  resized to ``image_size`` (default 32).

``data_root`` defaults to the ``RNAS_DATA_ROOT`` environment variable, else ``data/`` in the project.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from . import PROJECT_ROOT


class TensorData(NamedTuple):
    x: torch.Tensor  # float32 (N, C, H, W), pixels in [0, 1]
    y: torch.Tensor  # int64 (N,)

    def __len__(self):
        return len(self.y)

    def subset(self, index) -> "TensorData":
        return TensorData(self.x[index], self.y[index])


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple


_INFO = {
    "digits": DatasetInfo("digits", 1, 10, 8, (0.3049,), (0.3758,)),
    "mnist": DatasetInfo("mnist", 1, 10, 28, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 1, 10, 28, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo("cifar10", 3, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
NAMES = tuple(_INFO) + ("npz:<path>", "folder:<path>")


def default_data_root() -> Path:
    return Path(os.environ.get("RNAS_DATA_ROOT") or PROJECT_ROOT / "data")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not (name in _INFO or name.startswith(("npz:", "folder:"))):
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(NAMES)}")


def dataset_info(name: str, data_root=None) -> DatasetInfo:
    """Channels, classes, image size and per-channel mean/std (of the training set) of a dataset."""
    _check_name(name)
    if name in _INFO:
        return _INFO[name]
    train = load_dataset(name, train=True, data_root=data_root)
    x = train.x
    return DatasetInfo(
        name, x.shape[1], int(train.y.max()) + 1, x.shape[-1],
        tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()),
    )


def load_dataset(name: str = "digits", train: bool = True, data_root=None, limit: int | None = None,
                 download: bool = True) -> TensorData:
    """The training or test split of dataset ``name`` (first ``limit`` samples if given)."""
    _check_name(name)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    root = Path(data_root) if data_root is not None else default_data_root()
    if name == "digits":
        data = _digits(train)
    elif name.startswith("npz:"):
        data = _npz(Path(name[4:]), train)
    elif name.startswith("folder:"):
        data = _folder(Path(name[7:]), train)
    else:
        data = _torchvision(name, root, train, download)
    if limit is not None:
        data = data.subset(slice(0, limit))
    return data


def _digits(train: bool) -> TensorData:
    images, labels = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_train = int(0.8 * len(y))
    index = order[:n_train] if train else order[n_train:]
    return TensorData(x[index], y[index])


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (N, 8, 8), grey levels 0..16, and their labels, read from the CSV file inside
    scikit-learn's wheel (what ``sklearn.datasets.load_digits`` reads) without importing scikit-learn,
    whose import costs a notebook kernel or worker process about 2.5 s."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the digits dataset is read from scikit-learn's wheel: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1]


def _from_uint8(images: np.ndarray, labels: np.ndarray, source: str) -> TensorData:
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, :, :, None]
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"{source}: need images (N,H,W[,C]) and N labels, got {images.shape} and {labels.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return TensorData(x.contiguous(), torch.as_tensor(labels, dtype=torch.int64))


def _npz(path: Path, train: bool) -> TensorData:
    if not path.is_file():
        raise FileNotFoundError(f"dataset npz:{path}: no such file; give the path of an .npz with x_train, y_train, x_test, y_test")
    with np.load(path) as f:
        split = "train" if train else "test"
        keys = (f"x_{split}", f"y_{split}")
        if not all(k in f for k in keys):
            raise ValueError(f"dataset npz:{path} lacks {keys}; it has {sorted(f.keys())}")
        return _from_uint8(f[keys[0]], f[keys[1]], f"npz:{path}")


def _folder(path: Path, train: bool, image_size: int = 32) -> TensorData:
    from torchvision import datasets, transforms

    sub = ["train"] if train else ["test", "val"]
    for s in sub:
        if (path / s).is_dir():
            tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()])
            ds = datasets.ImageFolder(str(path / s), transform=tf)
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            return TensorData(torch.stack(xs), torch.tensor(ys, dtype=torch.int64))
    raise FileNotFoundError(f"dataset folder:{path}: no {' or '.join(s + '/' for s in sub)} sub-folder; "
                            "lay it out as <path>/train/<class>/*.png and <path>/test/<class>/*.png")


_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
#: where torchvision keeps each dataset under data_root
_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}


def _torchvision(name: str, root: Path, train: bool, download: bool) -> TensorData:
    from torchvision import datasets

    cls = getattr(datasets, _TORCHVISION[name])
    try:
        ds = cls(root=str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing(name, root) from None
        try:
            ds = cls(root=str(root), train=train, download=True)
        except Exception as err:  # offline: URLError, socket errors, checksum errors
            raise _missing(name, root) from err
    images, labels = np.asarray(ds.data), np.asarray(ds.targets)
    return _from_uint8(images, labels, name)


def _missing(name: str, root: Path) -> FileNotFoundError:
    folder = root / _FOLDERS[name]
    return FileNotFoundError(
        f"dataset {name!r} is not under {folder} (data_root={root}) and could not be downloaded. "
        f"On a machine with internet run torchvision.datasets.{_TORCHVISION[name]}(root={str(root)!r}, download=True), "
        "or set RNAS_DATA_ROOT / data_root to a folder that holds it; 'digits' needs no download."
    )


def search_split(data: TensorData, seed: int = 0) -> tuple[TensorData, TensorData]:
    """Two disjoint halves of a training set: one to train the weights w, one to train α."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    half = len(data) // 2
    return data.subset(order[:half]), data.subset(order[half:])


def batches(data: TensorData, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches (x, y), moved to ``device`` if given; shuffled with ``generator`` (a CPU
    generator: the order does not depend on the device) if asked; the last batch may be smaller."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        x, y = data.x[index], data.y[index]
        yield (x, y) if device is None else (x.to(device), y.to(device))
