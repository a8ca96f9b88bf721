"""The Fashion-MNIST locator: search order, unpacking, and the message when nothing is found."""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datasets  # noqa: E402


def _write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """Write ``array`` (uint8) in the IDX format of the original MNIST files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_fashion(directory: Path, *, gz: bool, n_train: int = 12, n_test: int = 5):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write_idx(directory / name, arr, gz=gz)
    return arrays


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)


@pytest.mark.parametrize("gz", [True, False])
def test_explicit_dir_is_used_first_and_loads_exact_pixels(tmp_path, gz):
    arrays = _fake_fashion(tmp_path / "mine", gz=gz)
    train, test, source = datasets.fashion_mnist(tmp_path / "mine", download=False)
    assert source.startswith("--data-dir")
    assert len(train) == 12 and len(test) == 5
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).to(torch.uint8)
    assert torch.equal(train.data, expected)
    assert torch.equal(test.targets, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_environment_variable_is_second(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "env" / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    loc = datasets.locate_fashion_mnist(download=False)
    assert loc.source.startswith(f"${datasets.ENV_VAR}")
    assert loc.root == tmp_path / "env"  # torchvision layout: used in place, nothing copied


def test_missing_everywhere_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "nothing-here")
    with pytest.raises(datasets.DatasetNotFound) as err:
        datasets.locate_fashion_mnist(download=False)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert datasets.ENV_VAR in msg


def test_nonexistent_data_dir_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "nothing-here")
    with pytest.raises(datasets.DatasetNotFound, match="does not exist"):
        datasets.locate_fashion_mnist(tmp_path / "typo", download=False)


def test_incomplete_directory_is_not_used(tmp_path, monkeypatch):
    _fake_fashion(tmp_path / "partial", gz=True)
    os.remove(tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "nothing-here")
    with pytest.raises(datasets.DatasetNotFound):
        datasets.locate_fashion_mnist(tmp_path / "partial", download=False)


@pytest.mark.skipif(
    not datasets.DEBIAN_FASHION_MNIST.is_dir() and not os.environ.get("CI"),
    reason="Debian package dataset-fashion-mnist not installed (CI installs it)",
)
def test_debian_copy_is_the_real_dataset():
    train, test, source = datasets.fashion_mnist(download=False)
    assert "Debian" in source
    assert (len(train), len(test)) == (60000, 10000)
    assert train.data.shape == (60000, 28, 28)
    assert torch.bincount(test.targets).tolist() == [1000] * 10  # balanced classes
