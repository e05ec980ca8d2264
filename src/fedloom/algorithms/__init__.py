"""The algorithms of the FedAvg family, each a small module returning an Algorithm value."""

from fedloom.algorithms.base import (
    Algorithm,
    ServerState,
    attach_corrections,
    scaffold_client_control,
    server_init,
    server_update,
)
from fedloom.algorithms.fedavg import fedavg, fedsgd
from fedloom.algorithms.fednova import fednova
from fedloom.algorithms.fedopt import fedadagrad, fedadam, fedavgm, fedyogi
from fedloom.algorithms.fedprox import fedprox
from fedloom.algorithms.qffl import qffl
from fedloom.algorithms.scaffold import scaffold

__all__ = [
    "Algorithm",
    "ServerState",
    "attach_corrections",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fednova",
    "fedprox",
    "fedsgd",
    "fedyogi",
    "qffl",
    "scaffold",
    "scaffold_client_control",
    "server_init",
    "server_update",
]
