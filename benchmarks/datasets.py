"""Finding real datasets offline, and saying which copy was used.

Fashion-MNIST is looked for, in order, in an explicit ``data_dir``, the directory named by the
environment variable ``SPIKEGRAD_DATA``, the Debian package's location
(``/usr/share/datasets/fashion-mnist``, ``apt-get install dataset-fashion-mnist``), and only
then downloaded by torchvision. A directory counts if it holds the four original files
(``train-images-idx3-ubyte[.gz]`` ...) directly, under ``FashionMNIST/raw/``, or under
``fashion-mnist/``. Compressed files are unpacked into a cache directory in torchvision's
layout.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "SPIKEGRAD_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DatasetNotFound(RuntimeError):
    """No copy of a dataset was found and it could not be downloaded."""


@dataclass(frozen=True)
class Located:
    root: Path  # a directory torchvision's FashionMNIST(root, download=False) accepts
    source: str  # human-readable: where the files came from


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikegrad"


def _raw_files_in(directory: Path) -> dict[str, Path] | None:
    """Map each Fashion-MNIST file name to an existing (possibly .gz) file, or ``None``."""
    for cand in (directory, directory / "FashionMNIST" / "raw", directory / "fashion-mnist"):
        found = {}
        for name in FASHION_FILES:
            for path in (cand / name, cand / f"{name}.gz"):
                if path.is_file():
                    found[name] = path
                    break
        if len(found) == len(FASHION_FILES):
            return found
    return None


def _as_torchvision_root(files: dict[str, Path]) -> Path:
    """Return a root whose ``FashionMNIST/raw`` holds the unpacked files (unpacking if needed)."""
    raw_dirs = {p.parent for p in files.values()}
    if all(p.suffix != ".gz" for p in files.values()) and len(raw_dirs) == 1:
        raw = raw_dirs.pop()
        if raw.name == "raw" and raw.parent.name == "FashionMNIST":
            return raw.parent.parent
    target = _cache_dir() / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        out = target / name
        if out.is_file() and out.stat().st_size > 0:
            continue
        tmp = out.with_suffix(".part")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return target.parent.parent


def locate_fashion_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True
                         ) -> Located:
    """Find Fashion-MNIST (see the module docstring for the search order).

    Raises:
        DatasetNotFound: with what to install or where to put the files.
    """
    tried = []
    candidates = []
    if data_dir is not None:
        candidates.append((Path(data_dir), f"--data-dir {data_dir}"))
    if os.environ.get(ENV_VAR):
        candidates.append((Path(os.environ[ENV_VAR]), f"${ENV_VAR}={os.environ[ENV_VAR]}"))
    candidates.append((DEBIAN_FASHION_MNIST, f"Debian package dataset-fashion-mnist "
                                             f"({DEBIAN_FASHION_MNIST})"))
    for directory, label in candidates:
        files = _raw_files_in(directory)
        if files is not None:
            return Located(_as_torchvision_root(files), label)
        tried.append(str(directory))
    if data_dir is not None and not Path(data_dir).exists():
        raise DatasetNotFound(f"--data-dir {data_dir} does not exist")
    if download:
        from torchvision.datasets import FashionMNIST

        root = _cache_dir() / "download"
        try:
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return Located(root, f"downloaded by torchvision into {root}")
        except Exception as exc:  # noqa: BLE001 - any network failure ends the same way
            tried.append(f"torchvision download ({type(exc).__name__}: {exc})")
    raise DatasetNotFound(
        "Fashion-MNIST not found. Tried: " + "; ".join(tried) + ". Fix: "
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files "
        f"{', '.join(f + '.gz' for f in FASHION_FILES)} into a directory and pass --data-dir "
        f"DIR or set {ENV_VAR}=DIR, or run once with network access so torchvision can "
        "download them."
    )


def fashion_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True):
    """``(train, test, source)``: torchvision datasets as float tensors in ``[0, 1]``."""
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    loc = locate_fashion_mnist(data_dir, download=download)
    tf = transforms.ToTensor()
    train = FashionMNIST(str(loc.root), train=True, download=False, transform=tf)
    test = FashionMNIST(str(loc.root), train=False, download=False, transform=tf)
    return train, test, loc.source


def fashion_mnist_tensors(data_dir: str | os.PathLike | None = None, *, download: bool = True):
    """``((x_train, y_train), (x_test, y_test), source)``: images as float ``[N, 28, 28]`` in
    ``[0, 1]`` and integer labels, straight from the dataset's tensors (no per-item transform).

    Raises:
        DatasetNotFound: with what to install or where to put the files.
    """
    train, test, source = fashion_mnist(data_dir, download=download)
    data = tuple((ds.data.float().div(255.0), ds.targets.clone()) for ds in (train, test))
    return data[0], data[1], source
