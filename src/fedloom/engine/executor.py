"""The Executor protocol: whatever trains a cohort and returns its results.

Simulation executors call client code in memory; the network executor gets the same
:class:`~fedloom.types.ClientResult` values from remote clients. The round loop cannot tell
them apart.

An executor may also define ``round_metrics() -> dict[str, float]``: measurements of the
round it just ran (bytes on the wire, client compute time), merged into the round's report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from fedloom.client import LocalContext
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["Executor"]


class Executor(Protocol):
    """Trains the clients of ``plans`` from the broadcast ``params``."""

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        """One result (or failure) per plan, in plan order.

        ``buffers[client_id]`` holds the buffers the client starts from (the global ones, or
        its own when buffers are kept local).
        """
        ...
