"""fedloom: Federated Averaging and its family, fast in simulation and real in deployment.

The public surface is small and curated; everything else lives in subpackages
(``fedloom.data``, ``fedloom.client``, ``fedloom.aggregate``, ``fedloom.engine``...).
"""

__version__ = "0.1.0"

from fedloom import data, models, tasks  # noqa: E402
from fedloom.algorithms import (  # noqa: E402
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
from fedloom.client import LocalTraining  # noqa: E402
from fedloom.config import RunConfig, load_config  # noqa: E402
from fedloom.data import (  # noqa: E402
    Dataset,
    FederatedDataset,
    federate,
    load_digits,
    load_mnist,
    load_synthetic,
    partition,
)
from fedloom.engine import Callback, History, LocalWork  # noqa: E402
from fedloom.errors import ConfigError, DataError, FedloomError  # noqa: E402
from fedloom.experiment import run_experiment  # noqa: E402
from fedloom.simulation import simulate  # noqa: E402
from fedloom.tasks import Task  # noqa: E402

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
