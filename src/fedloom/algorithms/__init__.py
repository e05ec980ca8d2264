"""The algorithms of the FedAvg family, each a small module returning an Algorithm value."""

from fedloom.algorithms.base import Algorithm, ServerState, server_init, server_update
from fedloom.algorithms.fedavg import fedavg, fedsgd

__all__ = ["Algorithm", "ServerState", "fedavg", "fedsgd", "server_init", "server_update"]
