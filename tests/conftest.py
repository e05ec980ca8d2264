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


@pytest.fixture
def offline(monkeypatch):
    """No download can leave this process: ``urlopen`` fails at once, as on a machine
    without a network, so a test about missing data never waits on (or uses) the network."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline (tests)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def unequal_digits(digits):
    """12 digits clients with power-law sizes: unequal step counts and partial batches."""
    from fedloom.data import QuantitySkew, federate

    return federate(digits, QuantitySkew(12, sigma=1.0, min_size=10), seed=2)


@pytest.fixture(scope="session")
def worker_case(unequal_digits):
    """One round of all 12 clients and the sequential engine's results, for pool engines."""
    from types import SimpleNamespace

    import torch

    import fedloom as fl
    from fedloom.client import LocalContext, LocalTraining
    from fedloom.engine import plans_for_round
    from fedloom.params import flatten_params
    from fedloom.sim import SequentialExecutor

    module = fl.models.digits_mlp()
    params = flatten_params(module)
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1, momentum=0.9, weight_decay=1e-3)
    plans = plans_for_round(12, 1.0, seed=0, round=0)
    context = LocalContext(params)
    expected = SequentialExecutor(module, unequal_digits, local).fit(
        plans, params, {p.client_id: torch.zeros(0) for p in plans}, context
    )
    return SimpleNamespace(
        data=unequal_digits,
        module=module,
        params=params,
        local=local,
        plans=plans,
        context=context,
        expected=expected,
    )


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """No process a test started may outlive it, even a failed test's (tests/_processes.py)."""
    yield
    from _processes import kill_leftovers

    kill_leftovers()


def pytest_report_header(config):
    from _processes import SLOWDOWN

    return f"networked tests: deadlines scaled by {SLOWDOWN:.2f} (machine speed probe)"
