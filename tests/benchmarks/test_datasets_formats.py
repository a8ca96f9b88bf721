"""``load_dataset`` on small files in the datasets' real on-disk formats, written here.

MNIST: idx files in torchvision's ``MNIST/raw`` layout. CIFAR-10: the pickled python batches.
N-MNIST: tonic's ``NMNIST/{Train,Test}/<digit>/*.bin`` with 5-byte events. Every expectation
(pixels, labels, event counts per bin, polarity and pixel) is written out by hand from what the
test wrote. Downloads are replaced by failing (or file-writing) stand-ins: no network is tried.
"""

from __future__ import annotations

import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import datasets  # noqa: E402

torchvision = pytest.importorskip("torchvision")


class _Offline(OSError):
    pass


def _no_network(*_args, **_kwargs):
    raise _Offline("network disabled in this test")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _no_network)  # FashionMNIST too
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", _no_network)


# ---------------------------------------------------------------------------------- MNIST (idx)

def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: 0x0000, type 0x08 (uint8), ndim, big-endian uint32 sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_copy(raw: Path, seed: int, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 3, 4] = 255  # one known white pixel
    arrays["train-images-idx3-ubyte"][0, 3, 5] = 0
    for name, arr in arrays.items():
        _write_idx(raw / name, arr)
    return arrays


def test_mnist_idx_files_in_torchvision_layout(tmp_path):
    arrays = _mnist_copy(tmp_path / "data" / "MNIST" / "raw", seed=1)
    spec = datasets.load_dataset("mnist", T=3, data_dir=tmp_path / "data", download=False)
    assert (spec.name, spec.in_shape, spec.num_classes, spec.temporal) == (
        "mnist", (1, 28, 28), 10, False)
    assert spec.source == f"--data-dir {tmp_path / 'data'} ({tmp_path / 'data' / 'MNIST' / 'raw'})"
    assert (len(spec.train), len(spec.test)) == (6, 4)
    x, y = spec.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x[0, 3, 4].item() == 1.0 and x[0, 3, 5].item() == 0.0
    for split, prefix in ((spec.train, "train"), (spec.test, "t10k")):
        images, labels = split.tensors
        assert images.min() >= 0 and images.max() <= 1
        assert torch.equal((images * 255).round().to(torch.uint8)[:, 0],
                           torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]))
        assert labels.tolist() == arrays[f"{prefix}-labels-idx1-ubyte"].tolist()


def test_mnist_search_order_and_flat_directory(tmp_path, monkeypatch):
    env_arrays = _mnist_copy(tmp_path / "env" / "mnist", seed=2)
    mine = _mnist_copy(tmp_path / "mine", seed=3)  # flat: accepted from --data-dir only
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    spec = datasets.load_dataset("mnist", T=1, data_dir=tmp_path / "mine", download=False)
    assert spec.source == f"--data-dir {tmp_path / 'mine'}"
    assert spec.test.tensors[1].tolist() == mine["t10k-labels-idx1-ubyte"].tolist()
    (tmp_path / "empty").mkdir()  # an explicit directory without a copy: the next place counts
    spec = datasets.load_dataset("mnist", T=1, data_dir=tmp_path / "empty", download=False)
    assert spec.source.startswith(f"${datasets.ENV_VAR}=")
    assert spec.test.tensors[1].tolist() == env_arrays["t10k-labels-idx1-ubyte"].tolist()
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "mine"))  # flat, not explicit: ignored
    with pytest.raises(datasets.DatasetNotFound):
        datasets.load_dataset("mnist", T=1, download=False)


def test_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    written = {}

    def fake_download(self):  # stands in for the network: puts the files where torchvision would
        written.update(_mnist_copy(Path(self.raw_folder), seed=4))

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    spec = datasets.load_dataset("mnist", T=1)
    root = tmp_path / "cache" / "spikegrad" / "download"
    assert spec.source == f"downloaded by torchvision into {root}"
    assert spec.train.tensors[1].tolist() == written["train-labels-idx1-ubyte"].tolist()
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _no_network)
    again = datasets.load_dataset("mnist", T=1)  # the earlier download is reused, and said so
    assert again.source.startswith(f"the copy torchvision downloaded earlier ({root})")
    assert again.train.tensors[1].tolist() == written["train-labels-idx1-ubyte"].tolist()


def test_other_dataset_is_never_used(tmp_path, monkeypatch):
    _mnist_copy(tmp_path / "env" / "FashionMNIST" / "raw", seed=5)  # Fashion-MNIST's place
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(datasets.DatasetNotFound, match="MNIST not found"):
        datasets.load_dataset("mnist", T=1)
    spec = datasets.load_dataset("fashion-mnist", T=1)
    assert spec.source.startswith(f"${datasets.ENV_VAR}=") and spec.train.tensors[0].shape == (
        6, 1, 28, 28)


@pytest.mark.parametrize("name, hints", [
    ("mnist", ["MNIST/raw/", "train-images-idx3-ubyte"]),
    ("cifar10", ["cifar-10-batches-py/", "data_batch_1", "test_batch", "cifar-10-python.tar.gz"]),
    ("fashion-mnist", ["apt-get install dataset-fashion-mnist"]),
])
def test_missing_offline_says_what_to_do(name, hints, tmp_path):
    with pytest.raises(datasets.DatasetNotFound) as err:
        datasets.load_dataset(name, T=1, data_dir=tmp_path)
    msg = str(err.value)
    for hint in [*hints, "--data-dir", datasets.ENV_VAR, "network disabled in this test"]:
        assert hint in msg, hint


@pytest.mark.parametrize("name", datasets.DATASETS)
def test_nonexistent_data_dir_is_an_error(name, tmp_path):
    if name == "nmnist":
        pytest.importorskip("tonic")
    with pytest.raises(datasets.DatasetNotFound, match="does not exist"):
        datasets.load_dataset(name, T=1, data_dir=tmp_path / "typo")


def test_unknown_name_and_bad_T():
    with pytest.raises(ValueError) as err:
        datasets.load_dataset("imagenet", T=1)
    assert all(name in str(err.value) for name in datasets.DATASETS)
    with pytest.raises(ValueError, match="T must be >= 1"):
        datasets.load_dataset("mnist", T=0)
    for bad in (True, 2.5, "4"):
        with pytest.raises(TypeError):
            datasets.load_dataset("mnist", T=bad)


# ------------------------------------------------------------------ CIFAR-10 (python batches)

def _write_cifar(folder: Path, sizes: tuple[int, ...], seed: int) -> list[tuple[np.ndarray, list]]:
    """Batches 1..5 then test_batch, as pickled dicts; returns each one's [N, 3, 32, 32] images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = []
    for name, n in zip(names, sizes, strict=True):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {"batch_label": f"{name} of 5", "labels": labels,
                 "data": images.reshape(n, 3072),  # 1024 red, 1024 green, 1024 blue, row-major
                 "filenames": [f"img_{name}_{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written.append((images, labels))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"], "num_cases_per_batch": 2, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


def test_cifar10_python_batches(tmp_path, monkeypatch):
    written = _write_cifar(tmp_path / "env" / "cifar-10-batches-py", (2, 1, 3, 1, 2, 3), seed=6)
    with open(tmp_path / "env" / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        row = pickle.load(f)["data"][0]
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    spec = datasets.load_dataset("cifar10", T=4, download=False)
    assert spec.source == (f"${datasets.ENV_VAR}={tmp_path / 'env'} "
                           f"({tmp_path / 'env' / 'cifar-10-batches-py'})")
    assert (spec.in_shape, spec.num_classes, spec.temporal) == ((3, 32, 32), 10, False)
    assert (len(spec.train), len(spec.test)) == (9, 3)
    x, y = spec.train[2]  # first image of data_batch_2: channel c, row r, column k is
    for c, r, k in ((0, 0, 0), (1, 2, 5), (2, 31, 30)):  # the byte at c*1024 + r*32 + k
        assert round(x[c, r, k].item() * 255) == row[c * 1024 + r * 32 + k]
    assert y.item() == written[1][1][0]
    images, labels = spec.train.tensors
    assert images.dtype == torch.float32 and labels.dtype == torch.long
    assert torch.equal((images * 255).round().to(torch.uint8),
                       torch.from_numpy(np.concatenate([im for im, _ in written[:5]])))
    assert labels.tolist() == sum((lab for _, lab in written[:5]), [])
    assert spec.test.tensors[1].tolist() == written[5][1]


def test_cifar10_unreadable_batch_names_the_file(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py", (1, 1, 1, 1, 1, 1), seed=7)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((1, 100), np.uint8), "labels": [0]}, f)
    with pytest.raises(datasets.DatasetNotFound, match="test_batch.*uint8 \\[N, 3072\\]"):
        datasets.load_dataset("cifar10", T=1, data_dir=tmp_path)


# --------------------------------------------------------------------------- N-MNIST (tonic)

OVERFLOW = (0, 240, 0, 0, 0)  # y == 240: the timestamps after it are 2**13 us later


def _write_bin(path: Path, events: list[tuple[int, int, int, int] | tuple]) -> None:
    """N-MNIST's 40-bit events: x, y, then polarity (bit 7) and a 23-bit timestamp in us."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    for ev in events:
        if ev == OVERFLOW:
            out += bytes(ev)
            continue
        x, y, p, t = ev
        out += bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(out))


T0 = 100_000  # above 2**16: the timestamp's high bits sit beside the polarity bit
SAMPLE_A = [(1, 2, 0, T0), (1, 2, 0, T0 + 99), (33, 0, 1, T0 + 100), (5, 5, 0, T0 + 250),
            (0, 33, 1, T0 + 399), (10, 10, 1, T0 + 400)]  # the last one ends the recording
SAMPLE_B = [(2, 3, 1, 0), (2, 3, 1, 5000), OVERFLOW, (4, 4, 0, 100), (0, 0, 0, 8000)]


def _frames(T: int, counts: dict[tuple[int, int, int, int], int]) -> torch.Tensor:
    out = torch.zeros(T, 2, 34, 34)
    for (t, p, y, x), n in counts.items():
        out[t, p, y, x] = n
    return out


def _nmnist_copy(root: Path) -> None:
    _write_bin(root / "Train" / "3" / "00001.bin", SAMPLE_A)
    _write_bin(root / "Train" / "7" / "00002.bin", SAMPLE_B)
    _write_bin(root / "Test" / "0" / "00003.bin", [])
    _write_bin(root / "Test" / "9" / "00004.bin", SAMPLE_A)


def test_nmnist_bin_files_become_event_count_frames(tmp_path):
    pytest.importorskip("tonic")
    _nmnist_copy(tmp_path / "data" / "NMNIST")
    spec = datasets.load_dataset("nmnist", T=4, data_dir=tmp_path / "data", download=False)
    assert spec.source == f"--data-dir {tmp_path / 'data'} ({tmp_path / 'data' / 'NMNIST'})"
    assert (spec.in_shape, spec.num_classes, spec.temporal) == ((2, 34, 34), 10, True)
    assert (len(spec.train), len(spec.test)) == (2, 2)
    train = dict((y, x) for x, y in (spec.train[i] for i in range(2)))
    assert sorted(train) == [3, 7] and all(type(y) is int for y in train)
    assert all(x.dtype == torch.float32 and x.shape == (4, 2, 34, 34) for x in train.values())
    # T = 4 bins of (400 // 4) = 100 us from the first event, end-exclusive: [T0, T0+100) ...
    assert torch.equal(train[3], _frames(4, {(0, 0, 2, 1): 2, (1, 1, 0, 33): 1, (2, 0, 5, 5): 1,
                                             (3, 1, 33, 0): 1}))
    # the overflow marker moves the last two events to 8292 and 16192 us: bins of 16192 // 4
    assert torch.equal(train[7], _frames(4, {(0, 1, 3, 2): 1, (1, 1, 3, 2): 1,
                                             (2, 0, 4, 4): 1}))
    test = dict((y, x) for x, y in (spec.test[i] for i in range(2)))
    assert torch.equal(test[0], torch.zeros(4, 2, 34, 34))  # a recording without events
    assert torch.equal(test[9], train[3])
    clone = pickle.loads(pickle.dumps(spec.train))  # DataLoader workers may pickle it
    assert torch.equal(clone[0][0], spec.train[0][0])


def test_nmnist_T_sets_the_number_of_bins(tmp_path, monkeypatch):
    pytest.importorskip("tonic")
    _nmnist_copy(tmp_path / "NMNIST")
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "NMNIST"))  # the folder itself
    spec = datasets.load_dataset("nmnist", T=1, download=False)
    assert spec.source == f"${datasets.ENV_VAR}={tmp_path / 'NMNIST'}"
    x, y = spec.test[1]
    assert y == 9
    assert torch.equal(x, _frames(1, {(0, 0, 2, 1): 2, (0, 1, 0, 33): 1, (0, 0, 5, 5): 1,
                                      (0, 1, 33, 0): 1}))


def test_nmnist_download_goes_through_tonic(tmp_path, monkeypatch):
    tonic = pytest.importorskip("tonic")

    def fake_download(self):  # stands in for the network: tonic's own folder layout
        _nmnist_copy(Path(self.location_on_system))

    monkeypatch.setattr(tonic.datasets.NMNIST, "download", fake_download)
    spec = datasets.load_dataset("nmnist", T=2)
    root = tmp_path / "cache" / "spikegrad" / "download"
    assert spec.source == f"downloaded by tonic into {root}"
    assert (root / "NMNIST" / "Train" / "3" / "00001.bin").is_file()
    assert sorted(spec.train[i][1] for i in range(2)) == [3, 7]


def test_nmnist_missing_offline_says_what_to_do(tmp_path, monkeypatch):
    tonic = pytest.importorskip("tonic")
    monkeypatch.setattr(tonic.datasets.NMNIST, "download", _no_network)
    (tmp_path / "NMNIST" / "Train" / "1").mkdir(parents=True)  # no recordings: not a copy
    with pytest.raises(datasets.DatasetNotFound) as err:
        datasets.load_dataset("nmnist", T=2, data_dir=tmp_path)
    msg = str(err.value)
    for hint in ("NMNIST/Train/<digit>/*.bin", "--data-dir", datasets.ENV_VAR,
                 "tonic download", "network disabled in this test"):
        assert hint in msg, hint


def test_nmnist_without_tonic_says_how_to_install(tmp_path, monkeypatch):
    for module in ("tonic", "tonic.datasets", "tonic.transforms"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    _nmnist_copy(tmp_path / "NMNIST")
    with pytest.raises(datasets.DatasetNotFound) as err:
        datasets.load_dataset("nmnist", T=2, data_dir=tmp_path)
    assert 'pip install "tonic>=1.6,<1.8"' in str(err.value)
    assert 'pip install -e ".[nmnist]"' in str(err.value)
