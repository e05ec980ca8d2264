"""Secure aggregation when the protocol runs over the network: the two ends of the pipeline.

In simulation :class:`~fedloom.privacy.secagg.stage.SecureSum` receives every client's update
and runs the whole protocol inside the reducer. A deployed server never holds a client's
update: each client turns its own update into its input (:func:`secure_input`: the
per-client clipping the pipeline would apply, then its whole weight), the transport
(:mod:`fedloom.net.secagg_executor`) runs the protocol, and what reaches the round loop is
one value, the decoded sum of the survivors' inputs and of their weights. :class:`DecodedSum`
is the reducer that takes that one value where ``SecureSum`` took the cohort:

- ``secure_input(u_k)`` is ``(w_k * clip(u_k), w_k)`` with ``w_k = n_k`` (example weighting)
  or 1 (uniform), exactly as ``SecureSum`` computes it from the pipeline's contribution;
- the transport hands the round loop one :class:`~fedloom.types.ClientResult` whose update is
  ``sum_k w_k clip(u_k)`` (float32) and whose ``num_examples`` is ``W = sum_k w_k``, the
  secure sums over the survivors;
- :class:`DecodedSum` returns ``sum / W`` (``mean``: FedAvg's rule) or the sum itself
  (DP-FedAvg, whose noise stage follows and divides by the expected cohort).

So a deployed round gives the same step as the simulated one, up to the same quantization
bound (``SecureSum.error_bound``), and composes with the same aggregate stages (central DP
noise, server optimizers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedloom.aggregate import Contribution, RoundInfo
from fedloom.aggregate.clip import Clip
from fedloom.errors import StageError

__all__ = ["COHORT_SUM_ID", "WEIGHTINGS", "DecodedSum", "secure_input"]

COHORT_SUM_ID = -1
"""The client id of the one result a secure deployed round hands the round loop: the
cohort's decoded sum, not any client's update."""

WEIGHTINGS = ("examples", "uniform")


def secure_input(
    update: torch.Tensor, num_examples: int, *, weighting: str, clip_norm: float | None
) -> tuple[np.ndarray, int]:
    """A client's input to the protocol: ``(w * clip(update) as float64, w)``.

    ``clip_norm`` (``None``: none) is the pipeline's per-client clipping (``server.clip_norm``,
    DP-FedAvg's clip), the same stage simulation applies; ``w`` is ``num_examples`` with
    ``weighting="examples"`` and 1 with ``"uniform"``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    weight = int(num_examples) if weighting == "examples" else 1
    if clip_norm is not None:
        contribution = Contribution(update, 1.0, 0, int(num_examples), 1)
        update = Clip(clip_norm).update(contribution, None, info=RoundInfo()).update
    return update.double().numpy() * weight, weight


@dataclass(frozen=True)
class DecodedSum:
    """The reducer of a deployed secure round: its one contribution is the decoded sum
    (update ``sum_k w_k u_k``, ``num_examples`` ``W``); the step is ``sum / W`` with
    ``mean``, else the sum."""

    mean: bool = True
    kind = "reduce"
    stacks = False

    @property
    def name(self) -> str:
        return "secure_mean" if self.mean else "secure_sum"

    def init(self, params: torch.Tensor) -> dict[str, float]:
        return {}

    def min_updates(self) -> int:
        return 1  # the one decoded sum; the protocol's threshold is the transport's to enforce

    def start(self, params: torch.Tensor, *, expected: int | None = None) -> list[Contribution]:
        return []

    def fold(self, acc: list[Contribution], contribution: Contribution) -> list[Contribution]:
        if contribution.client_id != COHORT_SUM_ID or acc:
            raise StageError(
                f"{self.name}: got the update of client {contribution.client_id}; a deployed "
                "secure round reduces only the cohort's decoded sum (one per round)"
            )
        return [contribution]

    def finish(
        self, acc: list[Contribution], state: Any, *, info: RoundInfo
    ) -> tuple[torch.Tensor, Any]:
        if not acc:
            raise StageError(f"{self.name}: no decoded sum reached the aggregation")
        (total,) = acc
        step = total.update.double()
        if self.mean:
            if total.num_examples <= 0:
                raise StageError(f"{self.name}: the survivors' weights sum to {total.num_examples}")
            step = step / total.num_examples
        return step.to(torch.float32), state
