"""MNIST from its canonical IDX files.

The loader looks in ``<root>/mnist/`` for the four files (gzip-compressed or not). When they
are missing it downloads them if the machine is online, and otherwise fails with a message that
names the files and where to put them. Nothing is ever unpickled.
"""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.errors import DataError

__all__ = ["MNIST_FILES", "default_data_root", "load_mnist", "read_idx"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# Standardization constants of the MNIST training set (pixel mean and std on [0, 1]).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def default_data_root() -> Path:
    """``$FEDLOOM_DATA`` if set, else ``$XDG_CACHE_HOME/fedloom`` (``~/.cache/fedloom``)."""
    if os.environ.get("FEDLOOM_DATA"):
        return Path(os.environ["FEDLOOM_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fedloom"


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally ``.gz``) into an array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to download it "
            "again, or replace it with the original file"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    return None


def _download(folder: Path, stem: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. the root is a regular file or read-only
        raise DataError(
            f"MNIST file {stem}.gz is not in {folder}, and that folder cannot be created to "
            f"download it ({exc.strerror or exc}). {_where_to_put(folder)}"
        ) from None
    target = folder / f"{stem}.gz"
    errors = []
    for mirror in MIRRORS:
        partial = target.with_suffix(".gz.part")
        try:
            with (
                urllib.request.urlopen(mirror + f"{stem}.gz", timeout=30) as response,
                open(partial, "wb") as out,
            ):
                shutil.copyfileobj(response, out)
            read_idx(partial.rename(target))  # validate before trusting it
            return target
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{mirror}: {exc}")
            partial.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
    raise DataError(
        f"MNIST file {stem}.gz is not in {folder} and could not be downloaded "
        f"({'; '.join(errors)}). {_where_to_put(folder)}"
    )


def _where_to_put(folder: Path) -> str:
    return (
        f"Put the four files {', '.join(f + '.gz' for f in MNIST_FILES.values())} in {folder} "
        "(or point --data-root / FEDLOOM_DATA at a folder whose mnist/ subfolder holds them)."
    )


def load_mnist(
    root: str | Path | None = None, *, download: bool = True, standardize: bool = True
) -> Dataset:
    """MNIST as float32 images ``[N, 1, 28,28]`` and int64 labels.

    Args:
        root: data root; the files are read from ``<root>/mnist/``. Defaults to
            :func:`default_data_root`.
        download: fetch missing files when online.
        standardize: shift and scale pixels by the training set's mean and std (the usual
            0.1307, 0.3081); ``False`` keeps raw pixels in [0, 1], as McMahan et al. 2017 fed
            their models.
    """
    folder = Path(root if root is not None else default_data_root()).expanduser() / "mnist"
    arrays = {}
    for key, stem in MNIST_FILES.items():
        path = _find(folder, stem)
        if path is None:
            if not download:
                raise DataError(
                    f"MNIST file {stem}(.gz) not found in {folder}; put the four IDX files "
                    "there or allow downloading."
                )
            path = _download(folder, stem)
        arrays[key] = read_idx(path)

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)
        return (x - MNIST_MEAN) / MNIST_STD if standardize else x

    return Dataset(
        name="mnist",
        train_x=images(arrays["train_images"]),
        train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_x=images(arrays["test_images"]),
        test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
    )
