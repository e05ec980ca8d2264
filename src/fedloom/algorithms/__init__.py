"""The algorithms of the FedAvg family, each a small module returning an Algorithm value."""

from fedloom.algorithms.base import (
    Algorithm,
    ServerState,
    StateLogic,
    pipeline_metrics,
    pipeline_stop_reason,
    prepare_plans,
    server_init,
    server_update,
)
from fedloom.algorithms.ditto import ditto
from fedloom.algorithms.fedavg import fedavg, fedsgd
from fedloom.algorithms.fednova import fednova
from fedloom.algorithms.fedopt import fedadagrad, fedadam, fedavgm, fedyogi
from fedloom.algorithms.fedper import fedbn, fedper
from fedloom.algorithms.fedprox import fedprox
from fedloom.algorithms.fedrep import fedrep
from fedloom.algorithms.lifelong import lifelong
from fedloom.algorithms.personal import Personal
from fedloom.algorithms.qffl import qffl
from fedloom.algorithms.scaffold import ControlVariates, scaffold, scaffold_client_control

__all__ = [
    "Algorithm",
    "ControlVariates",
    "Personal",
    "ServerState",
    "StateLogic",
    "ditto",
    "fedadagrad",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedbn",
    "fednova",
    "fedper",
    "fedrep",
    "fedprox",
    "fedsgd",
    "fedyogi",
    "lifelong",
    "pipeline_metrics",
    "pipeline_stop_reason",
    "prepare_plans",
    "qffl",
    "scaffold",
    "scaffold_client_control",
    "server_init",
    "server_update",
]
