"""Finding real datasets offline, loading them for the benchmarks, and saying which copy was used.

Each dataset is looked for, in order, in an explicit ``data_dir`` (``--data-dir``), the directory
named by the environment variable ``SPIKEGRAD_DATA``, for Fashion-MNIST only the Debian
package's location (``/usr/share/datasets/fashion-mnist``, ``apt-get install
dataset-fashion-mnist``), and only then downloaded by its library (torchvision; tonic for
N-MNIST) into ``~/.cache/spikegrad/download``. The first copy found is used and named in the
returned ``source``; a dataset is never replaced by another one. When no copy is found,
:class:`DatasetNotFound` says what to install, where to put which files, or which flag or
variable to set. A ``data_dir`` that does not exist is an error by itself.

What counts as a copy in a directory ``DIR``:

* Fashion-MNIST: the four original files ``train-images-idx3-ubyte[.gz]`` ... directly in
  ``DIR``, in ``DIR/FashionMNIST/raw/`` or in ``DIR/fashion-mnist/``.
* MNIST: the same four file names in ``DIR/MNIST/raw/`` or ``DIR/mnist/``; directly in ``DIR``
  only when ``DIR`` is the explicit ``data_dir`` (Fashion-MNIST's files have the same names).
* CIFAR-10: the python batches ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` in
  ``DIR/cifar-10-batches-py/`` or directly in ``DIR``.
* N-MNIST: tonic's layout, ``DIR/NMNIST/Train/<digit>/*.bin`` and ``DIR/NMNIST/Test/<digit>/
  *.bin``; ``DIR`` may also be that ``NMNIST`` folder.

Compressed idx files are unpacked into a cache directory in torchvision's layout.
:func:`load_dataset` is the one entry point of the benchmark harness.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import operator
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

# imported as benchmarks.datasets, or the scripts' way (benchmarks/ on sys.path)
_formats = importlib.import_module(f"{__package__}.data_formats" if __package__ else "data_formats")
CIFAR_FOLDER, NMNIST_FRAME, TONIC_INSTALL = (_formats.CIFAR_FOLDER, _formats.NMNIST_FRAME,
                                             _formats.TONIC_INSTALL)
NMNISTFrames, cifar_folder, import_tonic = (_formats.NMNISTFrames, _formats.cifar_folder,
                                            _formats.import_tonic)
nmnist_folder, read_cifar10 = _formats.nmnist_folder, _formats.read_cifar10

ENV_VAR = "SPIKEGRAD_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_FILES = FASHION_FILES  # torchvision's MNIST uses the same four names
DATASETS = ("fashion-mnist", "mnist", "cifar10", "nmnist")
_PUT_IT = f"and pass --data-dir DIR or set {ENV_VAR}=DIR"

PathLike = str | os.PathLike


class DatasetNotFound(RuntimeError):
    """No copy of a dataset was found and it could not be downloaded."""


@dataclass(frozen=True)
class Located:
    root: Path  # a directory torchvision's FashionMNIST(root, download=False) accepts
    source: str  # human-readable: where the files came from


@dataclass(frozen=True)
class DataSpec:
    """A dataset ready for the benchmark harness.

    Attributes:
        name: one of :data:`DATASETS`.
        train: training split; items ``(x, y)`` with ``x`` float32 and ``y`` the class (a
            0-dim long tensor or an int).
        test: test split, items as in ``train``.
        in_shape: shape of one sample at one time step: ``(C, H, W)``.
        num_classes: number of classes.
        temporal: ``False``: ``x`` is one static image ``[C, H, W]`` in ``[0, 1]`` (the harness
            repeats it over time); ``True``: ``x`` is already ``[T, C, H, W]`` frames.
        source: human-readable: which copy of the dataset was used.
    """

    name: str
    train: Dataset
    test: Dataset
    in_shape: tuple[int, ...]
    num_classes: int
    temporal: bool
    source: str


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikegrad"


def _idx_files_in(dirs: Iterable[Path]) -> tuple[dict[str, Path], Path] | None:
    """The first of ``dirs`` holding all four idx files (plain or .gz): ``(name -> file, dir)``."""
    for cand in dirs:
        found = {}
        for name in FASHION_FILES:
            for path in (cand / name, cand / f"{name}.gz"):
                if path.is_file():
                    found[name] = path
                    break
        if len(found) == len(FASHION_FILES):
            return found, cand
    return None


def _as_torchvision_root(files: dict[str, Path], folder: str) -> Path:
    """Return a root whose ``<folder>/raw`` holds the unpacked files (unpacking if needed).

    Unpacked copies go to a cache directory keyed by the source files' paths, sizes and times,
    so that two different copies never share one.
    """
    raw_dirs = {p.parent for p in files.values()}
    if all(p.suffix != ".gz" for p in files.values()) and len(raw_dirs) == 1:
        raw = raw_dirs.pop()
        if raw.name == "raw" and raw.parent.name == folder:
            return raw.parent.parent
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                     for _, p in sorted(files.items()))
    target = _cache_dir() / "unpacked" / hashlib.sha1(stamp.encode()).hexdigest()[:16]
    target = target / folder / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        out = target / name
        if out.is_file() and out.stat().st_size > 0:
            continue
        tmp = out.with_name(f"{name}.{os.getpid()}.part")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return target.parent.parent


def _search(title: str, data_dir: PathLike | None,
            find: Callable[[Path, bool], tuple[Any, Path] | None], *, fix: str,
            extra: Iterable[tuple[Path, str]] = (), fetch: Callable[[Path], Any] | None = None,
            library: str = "") -> tuple[Any, str]:
    """Return ``(what find or fetch returned, source)`` for the first copy in the search order.

    Args:
        title: the dataset's name in messages.
        data_dir: the explicit directory, looked at first.
        find: ``find(directory, explicit)`` returns ``(found, the folder it is in)`` or ``None``.
        fix: what to do when nothing is found (ends the message).
        extra: further ``(directory, label)`` after the environment variable.
        fetch: ``fetch(root)`` downloads into ``root``; ``None``: no download.
        library: who downloads, for messages.

    Raises:
        DatasetNotFound: ``data_dir`` does not exist, or no copy was found.
    """
    if data_dir is not None and not Path(data_dir).exists():
        raise DatasetNotFound(f"{title}: --data-dir {data_dir} does not exist")
    candidates = []
    if data_dir is not None:
        candidates.append((Path(data_dir), f"--data-dir {data_dir}", True))
    if os.environ.get(ENV_VAR):
        candidates.append((Path(os.environ[ENV_VAR]), f"${ENV_VAR}={os.environ[ENV_VAR]}", False))
    candidates += [(directory, label, False) for directory, label in extra]
    root = _cache_dir() / "download"
    if fetch is not None:  # a copy that an earlier run downloaded is reused, and said so
        candidates.append((root, f"the copy {library} downloaded earlier ({root})", False))
    tried = []
    for directory, label, explicit in candidates:
        hit = find(directory, explicit) if directory.is_dir() else None
        if hit is not None:
            found, where = hit
            return found, label if where == directory else f"{label} ({where})"
        tried.append(label)
    if fetch is None:
        tried.append("no download (download=False)")
    else:
        try:
            return fetch(root), f"downloaded by {library} into {root}"
        except Exception as exc:  # noqa: BLE001 - any network failure ends the same way
            tried.append(f"{library} download into {root} ({type(exc).__name__}: {exc})")
    raise DatasetNotFound(f"{title} not found. Tried: {'; '.join(tried)}. Fix: {fix}")


def _find_fashion(directory: Path, explicit: bool) -> tuple[Path, Path] | None:
    hit = _idx_files_in((directory, directory / "FashionMNIST" / "raw",
                         directory / "fashion-mnist"))
    return None if hit is None else (_as_torchvision_root(hit[0], "FashionMNIST"), hit[1])


def _fetch_fashion(root: Path) -> Path:
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    return root


def locate_fashion_mnist(data_dir: PathLike | None = None, *, download: bool = True) -> Located:
    """Find Fashion-MNIST (see the module docstring for the search order).

    Args:
        data_dir: an explicit directory, looked at first.
        download: let torchvision download it when no copy is found.

    Returns:
        A torchvision root and which copy it holds.

    Raises:
        DatasetNotFound: with what to install or where to put the files.
    """
    root, source = _search(
        "Fashion-MNIST", data_dir, _find_fashion,
        extra=[(DEBIAN_FASHION_MNIST,
                f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_MNIST})")],
        fetch=_fetch_fashion if download else None, library="torchvision",
        fix="`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files "
            f"{', '.join(f + '.gz' for f in FASHION_FILES)} into a directory DIR {_PUT_IT}, or "
            "run once with network access so torchvision can download them.")
    return Located(root, source)


def fashion_mnist(data_dir: PathLike | None = None, *, download: bool = True):
    """``(train, test, source)``: torchvision datasets as float tensors in ``[0, 1]``."""
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    loc = locate_fashion_mnist(data_dir, download=download)
    tf = transforms.ToTensor()
    train = FashionMNIST(str(loc.root), train=True, download=False, transform=tf)
    test = FashionMNIST(str(loc.root), train=False, download=False, transform=tf)
    return train, test, loc.source


def fashion_mnist_tensors(data_dir: PathLike | None = None, *, download: bool = True):
    """``((x_train, y_train), (x_test, y_test), source)``: images as float ``[N, 28, 28]`` in
    ``[0, 1]`` and integer labels, straight from the dataset's tensors (no per-item transform).

    Raises:
        DatasetNotFound: with what to install or where to put the files.
    """
    train, test, source = fashion_mnist(data_dir, download=download)
    data = tuple((ds.data.float().div(255.0), ds.targets.clone()) for ds in (train, test))
    return data[0], data[1], source


def _static(images: torch.Tensor, labels: Any) -> TensorDataset:
    """uint8 ``[N, C, H, W]`` images and ``N`` labels as float ``[0, 1]`` images, long labels."""
    return TensorDataset(images.float().div_(255.0), torch.as_tensor(labels, dtype=torch.long))


def _load_mnist(data_dir: PathLike | None, download: bool) -> tuple[Dataset, Dataset, str]:
    from torchvision.datasets import MNIST

    def find(directory: Path, explicit: bool) -> tuple[Path, Path] | None:
        dirs = [directory / "MNIST" / "raw", directory / "mnist"]
        hit = _idx_files_in(dirs + [directory] if explicit else dirs)
        return None if hit is None else (_as_torchvision_root(hit[0], "MNIST"), hit[1])

    def fetch(root: Path) -> Path:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
        return root

    root, source = _search(
        "MNIST", data_dir, find, fetch=fetch if download else None, library="torchvision",
        fix=f"put the four files {', '.join(f + '[.gz]' for f in MNIST_FILES)} into "
            f"DIR/MNIST/raw/ {_PUT_IT}, or run once with network access so torchvision can "
            "download them.")
    train, test = (MNIST(str(root), train=t, download=False) for t in (True, False))
    return _static(train.data.unsqueeze(1), train.targets), \
        _static(test.data.unsqueeze(1), test.targets), source


def _load_cifar10(data_dir: PathLike | None, download: bool) -> tuple[Dataset, Dataset, str]:
    def find(directory: Path, explicit: bool) -> tuple[Path, Path] | None:
        folder = cifar_folder(directory)
        return None if folder is None else (folder, folder)

    def fetch(root: Path) -> Path:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=False, download=True)  # fetches both splits, checks md5 sums
        return root / CIFAR_FOLDER

    folder, source = _search(
        "CIFAR-10", data_dir, find, fetch=fetch if download else None, library="torchvision",
        fix="unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
            f"a directory DIR, so that DIR/{CIFAR_FOLDER}/ holds data_batch_1 ... data_batch_5 "
            f"and test_batch, {_PUT_IT}, or run once with network access so torchvision can "
            "download it.")
    try:
        (x_train, y_train), (x_test, y_test) = read_cifar10(folder)
    except (OSError, ValueError) as exc:
        raise DatasetNotFound(f"CIFAR-10 copy from {source} is unreadable: {exc}") from exc
    return _static(torch.from_numpy(x_train), y_train), \
        _static(torch.from_numpy(x_test), y_test), source


def _load_nmnist(data_dir: PathLike | None, download: bool, T: int
                 ) -> tuple[Dataset, Dataset, str]:
    try:
        import_tonic()
    except ImportError as exc:
        raise DatasetNotFound(str(exc)) from exc

    def find(directory: Path, explicit: bool) -> tuple[tuple[Dataset, Dataset], Path] | None:
        folder = nmnist_folder(directory)
        if folder is None:
            return None
        return tuple(NMNISTFrames(folder.parent, train=t, T=T, on_disk=True)
                     for t in (True, False)), folder

    def fetch(root: Path) -> tuple[Dataset, Dataset]:
        return tuple(NMNISTFrames(root, train=t, T=T, on_disk=False) for t in (True, False))

    (train, test), source = _search(
        "N-MNIST", data_dir, find, fetch=fetch if download else None, library="tonic",
        fix="unzip N-MNIST's Train.zip and Test.zip (https://www.garrickorchard.com/datasets/"
            "n-mnist) so that DIR/NMNIST/Train/<digit>/*.bin and DIR/NMNIST/Test/<digit>/*.bin "
            f"exist (tonic's layout), {_PUT_IT}, or run once with network access so tonic can "
            f"download it (tonic is installed with {TONIC_INSTALL}).")
    return train, test, source


def load_dataset(name: str, *, T: int, data_dir: PathLike | None = None,
                 download: bool = True) -> DataSpec:
    """Load a benchmark dataset, from the first copy in the search order (module docstring).

    Static datasets come as :class:`~torch.utils.data.TensorDataset` of float images in
    ``[0, 1]`` ``[N, C, H, W]`` and long labels ``[N]``, built from the raw arrays at once (fast
    on a CPU); N-MNIST comes as float32 event-count frames ``[T, 2, 34, 34]`` per recording,
    binned by tonic when an item is read.

    Args:
        name: one of :data:`DATASETS`.
        T: number of time steps; only temporal datasets (N-MNIST) use it, all check it.
        data_dir: an explicit directory, looked at first.
        download: let the library (torchvision, tonic) download the dataset when no copy is
            found.

    Returns:
        The dataset's splits, shapes and the copy used.

    Raises:
        ValueError: ``name`` is not one of :data:`DATASETS`, or ``T < 1``.
        TypeError: ``T`` is not an integer.
        DatasetNotFound: no copy found (or tonic missing); the message says what to do.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if isinstance(T, bool):
        raise TypeError("T must be an integer, got a bool")
    T = operator.index(T)
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if name == "nmnist":
        train, test, source = _load_nmnist(data_dir, download, T)
        return DataSpec(name, train, test, NMNIST_FRAME, 10, True, source)
    if name == "cifar10":
        train, test, source = _load_cifar10(data_dir, download)
        return DataSpec(name, train, test, (3, 32, 32), 10, False, source)
    if name == "mnist":
        train, test, source = _load_mnist(data_dir, download)
    else:
        (x_train, y_train), (x_test, y_test), source = fashion_mnist_tensors(
            data_dir, download=download)
        train = TensorDataset(x_train.unsqueeze(1), y_train)
        test = TensorDataset(x_test.unsqueeze(1), y_test)
    return DataSpec(name, train, test, (1, 28, 28), 10, False, source)


def check_subsets(spec: DataSpec, train_subset: int | None, test_subset: int | None) -> None:
    """Refuse a subset larger than its split, which could only be honoured by using fewer
    samples than asked for (and labelling the run with the number asked for).

    Raises:
        ValueError: naming the option (``--train-subset`` / ``--test-subset``), the split's
            size and the fix.
    """
    for option, asked, split, kind in (("--train-subset", train_subset, spec.train, "training"),
                                       ("--test-subset", test_subset, spec.test, "test")):
        if asked is not None and asked > len(split):
            raise ValueError(
                f"{option} {asked}: {spec.name} has only {len(split)} {kind} samples (the copy "
                f"used: {spec.source}); give {option} {len(split)} or less, or leave {option} "
                f"out to use all {len(split)}")


if __name__ == "__main__":  # `python benchmarks/datasets.py`: where is the Fashion-MNIST copy?
    import argparse
    import sys

    _p = argparse.ArgumentParser(description="Print the torchvision root of the Fashion-MNIST "
                                 "copy the benchmarks use (the search order is this module's "
                                 "docstring); torchvision.datasets.FashionMNIST(root, "
                                 "download=False) loads it.")
    _p.add_argument("--data-dir", default=None, help="an explicit directory, looked at first")
    _p.add_argument("--download", action="store_true",
                    help="let torchvision download it when no copy is found")
    _args = _p.parse_args()
    try:
        _found = locate_fashion_mnist(_args.data_dir, download=_args.download)
    except DatasetNotFound as _exc:
        print(f"error: {_exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"Fashion-MNIST from {_found.source}", file=sys.stderr)
    print(_found.root)
