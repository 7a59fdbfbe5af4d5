import numpy as np
import pytest
import torch

from rnas_lib.data import batches, dataset_info, load_dataset, search_split


def test_digits_is_embedded_and_in_pixel_units():
    train, test = load_dataset("digits", True), load_dataset("digits", False)
    assert train.x.shape == (1437, 1, 8, 8) and test.x.shape == (360, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert set(train.y.tolist()) == set(range(10))
    info = dataset_info("digits")
    assert torch.allclose(train.x.mean(), torch.tensor(info.mean[0]), atol=1e-3)
    assert torch.allclose(train.x.std(), torch.tensor(info.std[0]), atol=1e-3)


def test_digits_are_scikit_learns_digits():
    """The digits are read from the CSV inside scikit-learn's wheel without importing it: the same
    images and labels as sklearn.datasets.load_digits, in the same seeded split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    for train, index in ((True, order[:1437]), (False, order[1437:])):
        data = load_dataset("digits", train)
        assert torch.equal(data.x, x[index]) and torch.equal(data.y, y[index])


def test_digits_train_and_test_are_disjoint():
    train, test = load_dataset("digits", True), load_dataset("digits", False)
    flat = {tuple(x.flatten().tolist()) for x in train.x}
    overlap = sum(tuple(x.flatten().tolist()) in flat for x in test.x)
    assert overlap <= 5  # the UCI set has a handful of exact duplicate images, no shared samples


def test_search_split_gives_disjoint_halves_that_cover_the_set():
    data = load_dataset("digits", True)
    a, b = search_split(data, seed=3)
    assert len(a) + len(b) == len(data) and abs(len(a) - len(b)) <= 1
    a2, _ = search_split(data, seed=3)
    assert torch.equal(a.x, a2.x)
    rows = torch.cat([a.x, b.x]).flatten(1)
    assert torch.equal(rows.sum(0), data.x.flatten(1).sum(0))


def test_batches_cover_every_sample_once():
    data = load_dataset("digits", False)
    seen = torch.cat([y for _, y in batches(data, 64, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(seen.sort().values, data.y.sort().values)
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(data, 0))


def test_real_mnist_subset(data_root):
    test = load_dataset("mnist", False, data_root, limit=500)
    assert test.x.shape == (500, 1, 28, 28) and 0.0 <= test.x.min() and test.x.max() <= 1.0
    assert dataset_info("mnist").in_channels == 1


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), y_train=np.arange(6) % 2,
             x_test=rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8), y_test=np.array([0, 1]))
    train = load_dataset(f"npz:{path}", True)
    assert train.x.shape == (6, 3, 4, 4)
    assert torch.allclose(train.x[1, 2, 3, 0] * 255, torch.tensor(float(np.load(path)["x_train"][1, 3, 0, 2])))
    info = dataset_info(f"npz:{path}")
    assert info.in_channels == 3 and info.num_classes == 2


def test_folder_source(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.fromarray(np.full((40, 40, 3), 200 if label == "dog" else 10, np.uint8)).save(
                tmp_path / split / label / "a.png")
    data = load_dataset(f"folder:{tmp_path}", False)
    assert data.x.shape == (2, 3, 32, 32) and data.y.tolist() == [0, 1]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset("npz:/nonexistent/x.npz")


def test_missing_offline_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion_mnist", data_root=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST") in message and "download=True" in message and "RNAS_DATA_ROOT" in message


def test_missing_cifar10_names_the_folder_torchvision_reads(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", data_root=tmp_path, download=False)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "CIFAR10(root=" in str(err.value)
