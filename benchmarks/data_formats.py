"""Readers for on-disk dataset formats that torchvision cannot load without a checksum match.

* CIFAR-10, "python version": pickled batches ``data_batch_1`` ... ``data_batch_5`` and
  ``test_batch``, each a dict whose ``data`` is uint8 ``[N, 3072]`` (per row the 1024 red, then
  the 1024 green, then the 1024 blue values of a 32x32 image, row-major) and whose ``labels`` is
  a list of ``N`` ints in ``0..9``. Read here directly because torchvision's ``CIFAR10`` insists
  on the md5 sums of the original files.
* N-MNIST, through tonic: ``NMNIST/Train/<digit>/*.bin`` and ``NMNIST/Test/<digit>/*.bin``,
  5 bytes per event (x, y, polarity bit and a 23-bit microsecond timestamp). tonic's ``NMNIST``
  reads the files and ``tonic.transforms.ToFrame`` bins the events into frames. tonic's own
  existence check wants the downloaded zip and at least 10 000 recordings; a copy already on
  disk is read through a subclass that checks for the folder layout instead and never
  downloads.

tonic is imported only when N-MNIST is asked for.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

TONIC_INSTALL = 'pip install "tonic>=1.6,<1.8"  (or: pip install -e ".[nmnist]")'
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
NMNIST_FOLDER = "NMNIST"
NMNIST_SPLITS = ("Train", "Test")
NMNIST_FRAME = (2, 34, 34)  # polarity, y, x


def cifar_folder(directory: Path) -> Path | None:
    """The folder holding all six CIFAR-10 batches: ``directory/cifar-10-batches-py`` or
    ``directory`` itself; ``None`` if neither does."""
    for cand in (directory / CIFAR_FOLDER, directory):
        if all((cand / name).is_file() for name in CIFAR_TRAIN + CIFAR_TEST):
            return cand
    return None


def _entry(batch: dict, key: str) -> Any:
    for k in (key, key.encode()):  # str keys (Python 2 pickles read as latin1) or bytes keys
        if k in batch:
            return batch[k]
    raise ValueError(f"no {key!r} entry")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (format in the module docstring).

    Unpickling can run code: only read files from a source you trust.

    Args:
        path: the batch file.

    Returns:
        Images as uint8 ``[N, 3, 32, 32]`` and labels as int64 ``[N]``.

    Raises:
        ValueError: the file is not a CIFAR-10 batch (also for a truncated or foreign pickle).
    """
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path}: not a pickle ({type(exc).__name__}: {exc})") from exc
    try:
        if not isinstance(batch, dict):
            raise ValueError(f"a {type(batch).__name__}, not a dict")
        data = np.asarray(_entry(batch, "data"))
        labels = np.asarray(_entry(batch, "labels"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"data is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
        if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels are {labels.dtype} {labels.shape}, expected {len(data)} ints")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"labels outside 0..9 ({labels.min()}..{labels.max()})")
    except ValueError as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch: {exc}") from exc
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


Split = tuple[np.ndarray, np.ndarray]


def read_cifar10(folder: Path) -> tuple[Split, Split]:
    """``((x_train, y_train), (x_test, y_test))`` from the batches in ``folder`` (see
    :func:`read_cifar_batch`), the training batches concatenated in order 1..5."""
    splits = []
    for names in (CIFAR_TRAIN, CIFAR_TEST):
        parts = [read_cifar_batch(folder / name) for name in names]
        splits.append(tuple(np.concatenate(p) for p in zip(*parts, strict=True)))
    return splits[0], splits[1]


def import_tonic() -> ModuleType:
    """Import tonic (with its datasets and transforms).

    Raises:
        ImportError: tonic is missing; the message says how to install it.
    """
    try:
        import tonic
        import tonic.datasets
        import tonic.transforms
    except ImportError as exc:
        raise ImportError(f"N-MNIST is read with the tonic package, which is missing: "
                          f"{TONIC_INSTALL}") from exc
    return tonic


def _has_recordings(split: Path) -> bool:
    return any(split.glob("[0-9]/*.bin"))


def nmnist_folder(directory: Path) -> Path | None:
    """The ``NMNIST`` folder with ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin`` in it:
    ``directory/NMNIST`` or ``directory`` itself; ``None`` if neither."""
    for cand in (directory / NMNIST_FOLDER, directory):
        if cand.name == NMNIST_FOLDER and all(_has_recordings(cand / s) for s in NMNIST_SPLITS):
            return cand
    return None


@lru_cache(maxsize=1)
def _on_disk_nmnist() -> type:
    """tonic's ``NMNIST`` for a copy already on disk (any number of recordings, no zip)."""
    base = import_tonic().datasets.NMNIST

    class NMNIST(base):  # the same name: tonic derives the data folder from the class name
        def _check_exists(self) -> bool:
            return _has_recordings(Path(self.location_on_system, self.folder_name))

        def download(self) -> None:
            raise FileNotFoundError(
                f"no N-MNIST recordings in {Path(self.location_on_system, self.folder_name)}")

    return NMNIST


class _EventsToFrames:
    """tonic's ``ToFrame`` with ``n_time_bins=T`` (event counts per bin, polarity and pixel);
    all-zero frames for a recording without events, which ``ToFrame`` cannot bin."""

    def __init__(self, T: int) -> None:
        tonic = import_tonic()
        self.T = T
        self.to_frame = tonic.transforms.ToFrame(
            sensor_size=tonic.datasets.NMNIST.sensor_size, n_time_bins=T)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        if len(events) == 0:
            return np.zeros((self.T, *NMNIST_FRAME), dtype=np.int16)
        return self.to_frame(events)


class NMNISTFrames(Dataset):
    """N-MNIST through tonic: items ``(frames, label)``, frames float32 ``[T, 2, 34, 34]``.

    Frame ``t`` counts the events per polarity and pixel in the ``t``-th of ``T`` equal time bins
    of the recording (tonic's binning: bins of ``(t_last - t_first) // T`` microseconds from the
    first event on, end-exclusive, so the events at the very last timestamp fall outside).

    Args:
        save_to: the directory holding the ``NMNIST`` folder (tonic's ``save_to``).
        train: the ``Train`` split if true, else ``Test``.
        T: number of frames.
        on_disk: read a copy already on disk (never download) if true; else let tonic check
            for its downloaded copy and download it when it is missing.
    """

    def __init__(self, save_to: Path, *, train: bool, T: int, on_disk: bool) -> None:
        self.save_to, self.train, self.T, self.on_disk = Path(save_to), train, T, on_disk
        self._events: Any = None
        self._events_dataset()  # scan (or download) now, so that problems show at load time

    def _events_dataset(self) -> Any:
        if self._events is None:
            cls = _on_disk_nmnist() if self.on_disk else import_tonic().datasets.NMNIST
            self._events = cls(str(self.save_to), train=self.train,
                               transform=_EventsToFrames(self.T))
        return self._events

    def __len__(self) -> int:
        return len(self._events_dataset())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        frames, label = self._events_dataset()[index]
        return torch.from_numpy(np.asarray(frames, dtype=np.float32)), int(label)

    def __getstate__(self) -> dict:
        # tonic's dataset holds a class made at run time; DataLoader workers rebuild it
        return {**self.__dict__, "_events": None}
