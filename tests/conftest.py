"""Shared fixtures. MNIST tests need the IDX files under $FEDLOOM_DATA/mnist and skip otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedloom.data import load_digits
from fedloom.data.mnist import MNIST_FILES


def mnist_root() -> Path | None:
    root = os.environ.get("FEDLOOM_DATA")
    if not root:
        return None
    folder = Path(root) / "mnist"
    present = all(
        (folder / f"{stem}.gz").exists() or (folder / stem).exists()
        for stem in MNIST_FILES.values()
    )
    return Path(root) if present else None


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, or a skip that says where the files are expected."""
    root = mnist_root()
    if root is None:
        pytest.skip(
            "MNIST IDX files not found: set FEDLOOM_DATA to a folder whose mnist/ holds "
            "train-images-idx3-ubyte.gz etc. (CI uses ../shared/data)"
        )
    from fedloom.data import load_mnist

    return load_mnist(root, download=False)


@pytest.fixture(scope="session")
def digits():
    return load_digits()
