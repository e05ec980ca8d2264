"""SCAFFOLD (Karimireddy et al. 2020, "Stochastic Controlled Averaging for Federated
Learning"), with option II control variates.

The server keeps a control variate ``c`` and every client its own ``c_k`` (zero until it
first takes part; kept unchanged while it sits out). Each local step uses the corrected
gradient ``g + c - c_k``, which cancels the client's drift towards its own optimum. After
``K`` steps of learning rate ``lr`` the client sets ``c_k+ = c_k - c + (x - y_k)/(K lr)`` and
the server moves ``x`` by the averaged update and ``c`` by ``(1/N) sum_k (c_k+ - c_k)``.

All of that lives here, as :class:`ControlVariates` (the algorithm's own state): ``c`` is the
algorithm's server state; each ``c_k`` is an entry ``"scaffold/c"`` of the client-state store
in simulation, and the deployed client's own in deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.client import LocalTraining
from fedloom.client.portable import portable
from fedloom.types import ClientResult

__all__ = ["CLIENT_CONTROL", "ControlVariates", "scaffold", "scaffold_client_control"]

CLIENT_CONTROL = "scaffold/c"
"""The client-state store entry holding a client's control variate ``c_k``."""


def scaffold_client_control(
    client_control: torch.Tensor | float,
    control: torch.Tensor,
    update: torch.Tensor,
    *,
    num_steps: int,
    lr: float,
) -> torch.Tensor:
    """SCAFFOLD option II (Karimireddy et al. 2020, Eq. 4):
    ``c_k+ = c_k - c + (x - y_k) / (K lr)`` with ``y_k - x`` the client's update.

    With plain SGD this is the mean local gradient along the client's trajectory.
    """
    return client_control - control - update / (num_steps * lr)


@portable("scaffold/control_variates")
@dataclass(frozen=True)
class ControlVariates:
    """SCAFFOLD's state: ``c`` on the server, each ``c_k`` with its client.

    Every client receives ``c``; its correction is ``c - c_k``; after training it computes
    ``c_k+`` and reports ``c_k+ - c_k`` ("control_change"), of which the server adds the
    mean over the population to ``c``. The server never needs ``c_k`` itself, so a deployed
    client keeps it (the paper's Algorithm 1 sends ``(Delta y, Delta c)``).
    """

    reports: ClassVar[tuple[str, ...]] = ("control_change",)

    def init(self, params: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(params)

    def shared(self, control: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return {"c": control}

    def correction(
        self, shared: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        client_control = own.get(CLIENT_CONTROL)
        return shared["c"] - (client_control if client_control is not None else 0.0)

    def remember(
        self,
        shared: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor],
        result: ClientResult,
        *,
        settings: LocalTraining,
    ) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]:
        control = shared["c"]
        old = own.get(CLIENT_CONTROL)
        old = old if old is not None else torch.zeros_like(control)
        new = scaffold_client_control(
            old, control, result.update, num_steps=result.num_steps, lr=settings.lr
        )
        return {CLIENT_CONTROL: new}, {"control_change": new - old}

    def start(self, control: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(control)  # sum_k (c_k+ - c_k) over the round

    def fold(
        self, change: torch.Tensor, control: torch.Tensor, report: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        return change + report["control_change"]

    def finish(
        self, change: torch.Tensor, control: torch.Tensor, *, num_clients: int
    ) -> torch.Tensor:
        return control + change / num_clients


def scaffold(*, server_lr: float = 1.0, weighting: Weighting = "uniform") -> Algorithm:
    """SCAFFOLD: corrected local steps, control variates on both sides.

    The paper averages ``Delta y`` uniformly over the sampled clients (the default here);
    ``server_lr`` is its global step size ``eta_g``.
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="scaffold",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        state=ControlVariates(),
    )
