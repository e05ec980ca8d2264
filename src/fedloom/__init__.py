"""fedloom: Federated Averaging and its family, fast in simulation and real in deployment.

The public surface is small and curated; everything else lives in subpackages
(``fedloom.data``, ``fedloom.client``, ``fedloom.aggregate``, ``fedloom.engine``...).

``import fedloom`` is light: it loads none of torch, matplotlib, gRPC, Ray or cryptography.
Each public name is imported on first use (PEP 562 ``__getattr__``), so ``fedloom --help``
answers at once and a script pays only for the parts it touches: ``fedloom.fedavg`` loads
torch, a run's plots load matplotlib, ``fedloom server`` loads gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "Callback",
    "ConfigError",
    "DataError",
    "Dataset",
    "FederatedDataset",
    "FedloomError",
    "History",
    "LocalTraining",
    "LocalWork",
    "RunConfig",
    "__version__",
    "data",
    "federate",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedsgd",
    "fedyogi",
    "load_config",
    "load_digits",
    "load_mnist",
    "load_synthetic",
    "models",
    "partition",
    "qffl",
    "run_experiment",
    "scaffold",
    "simulate",
    "Task",
    "tasks",
]

# Where each public name lives: the module to import on first access. A name that is itself
# a submodule ("data", "models") maps to that submodule. Keep in step with the imports under
# TYPE_CHECKING below (they give type checkers and IDEs the real types; a test compares them).
_SOURCES = {
    "Algorithm": "fedloom.algorithms",
    "Callback": "fedloom.engine",
    "ConfigError": "fedloom.errors",
    "DataError": "fedloom.errors",
    "Dataset": "fedloom.data",
    "FederatedDataset": "fedloom.data",
    "FedloomError": "fedloom.errors",
    "History": "fedloom.engine",
    "LocalTraining": "fedloom.client",
    "LocalWork": "fedloom.engine",
    "RunConfig": "fedloom.config",
    "data": "fedloom.data",
    "federate": "fedloom.data",
    "fedadagrad": "fedloom.algorithms",
    "fedadam": "fedloom.algorithms",
    "fedavg": "fedloom.algorithms",
    "fedavgm": "fedloom.algorithms",
    "fednova": "fedloom.algorithms",
    "fedprox": "fedloom.algorithms",
    "fedsgd": "fedloom.algorithms",
    "fedyogi": "fedloom.algorithms",
    "load_config": "fedloom.config",
    "load_digits": "fedloom.data",
    "load_mnist": "fedloom.data",
    "load_synthetic": "fedloom.data",
    "models": "fedloom.models",
    "partition": "fedloom.data",
    "qffl": "fedloom.algorithms",
    "run_experiment": "fedloom.experiment",
    "scaffold": "fedloom.algorithms",
    "simulate": "fedloom.simulation",
    "Task": "fedloom.tasks",
    "tasks": "fedloom.tasks",
}

if TYPE_CHECKING:
    from fedloom import data, models, tasks
    from fedloom.algorithms import (
        Algorithm,
        fedadagrad,
        fedadam,
        fedavg,
        fedavgm,
        fednova,
        fedprox,
        fedsgd,
        fedyogi,
        qffl,
        scaffold,
    )
    from fedloom.client import LocalTraining
    from fedloom.config import RunConfig, load_config
    from fedloom.data import (
        Dataset,
        FederatedDataset,
        federate,
        load_digits,
        load_mnist,
        load_synthetic,
        partition,
    )
    from fedloom.engine import Callback, History, LocalWork
    from fedloom.errors import ConfigError, DataError, FedloomError
    from fedloom.experiment import run_experiment
    from fedloom.simulation import simulate
    from fedloom.tasks import Task


SUBPACKAGES = frozenset(
    {"aggregate", "algorithms", "client", "config", "engine", "net", "registry", "report", "sim"}
)
"""Subpackages reachable as attributes (``fl.sim.QuadraticExecutor``) though not in
``__all__``: they load on first access, like the public names."""


def __getattr__(name: str) -> Any:
    """Import a public name on first access and keep it, so later lookups cost nothing."""
    source = _SOURCES.get(name) or (f"{__name__}.{name}" if name in SUBPACKAGES else None)
    if source is None:
        raise AttributeError(f"module 'fedloom' has no attribute {name!r}")
    module = importlib.import_module(source)
    value = module if source == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API is listed even before its names are imported."""
    return sorted({*globals(), *__all__})
