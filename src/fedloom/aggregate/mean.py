"""The linear reducers: the weighted mean (FedAvg's rule) and the weighted sum, streaming.

``Mean`` folds each contribution into a running float64 sum ``S = sum_k w_k u_k`` and a
running total ``W = sum_k w_k`` as it arrives and returns ``S / W`` rounded once to float32
(McMahan et al. 2017, Algorithm 1). Memory is two ``[P]`` float64 vectors whatever the
cohort size: FedAvg over 1,000 clients of the MNIST CNN holds ~13 MB of sums, not a 6.7 GB
``[K, P]`` stack (``benchmarks/run_pipeline_memory.py``). Float64 sums also make the result
independent of the arrival order up to float64 rounding, far below float32's.

``Sum`` returns ``S`` itself: the reduction of secure aggregation and of DP-FedAvg, whose
aggregate stages add noise to the sum and divide by the *expected* cohort size.

:func:`weighted_mean` is the same mean over a ``[K, P]`` matrix, for the stacked paths
(nodes of a hierarchy, tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedloom.aggregate.stage import Contribution, RoundInfo

__all__ = ["Mean", "Sum", "weighted_mean"]


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * updates[k]`` for a ``[K, P]`` matrix and ``[K]`` weights.

    Weights are used as given (normalize them first, see
    :func:`fedloom.aggregate.weighting.client_weights`).
    """
    if updates.ndim != 2 or weights.shape != (updates.shape[0],):
        raise ValueError(
            f"expected updates [K, P] and weights [K], got {tuple(updates.shape)} and "
            f"{tuple(weights.shape)}"
        )
    if updates.shape[1] == 0:
        return updates.new_zeros(0)
    return weights.to(updates.dtype) @ updates


RunningSum = tuple[torch.Tensor, torch.Tensor, float, int]
"""``(sum_k w_k u_k as float64 [P], a float64 [P] scratch vector, sum_k w_k, count)``."""


class _Streaming:
    """What the streaming reducers share: float64 running sums, folded in place.

    The accumulator is ``(sum_k w_k u_k, a scratch vector, sum_k w_k, count)``; widening each
    update into the reused scratch vector first is ~2x faster than a mixed-dtype ``add_`` and
    allocates nothing per update. Subclasses write ``finish``.
    """

    kind = "reduce"
    stacks = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def init(self, params: torch.Tensor) -> Any:
        return ()

    def start(self, params: torch.Tensor, *, expected: int | None = None) -> RunningSum:
        num_params = params.numel()
        return (
            torch.zeros(num_params, dtype=torch.float64),
            torch.empty(num_params, dtype=torch.float64),
            0.0,
            0,
        )

    def fold(self, acc: RunningSum, contribution: Contribution) -> RunningSum:
        total, scratch, weight, count = acc
        scratch.copy_(contribution.update)
        total.add_(scratch, alpha=contribution.weight)  # in place: the accumulator is ours
        return total, scratch, weight + contribution.weight, count + 1

    def min_updates(self) -> int:
        return 1


@dataclass(frozen=True)
class Mean(_Streaming):
    """The weighted mean ``sum_k w_k u_k / sum_k w_k``, streaming (see the module doc).

    Also usable on a stack (``Mean().combine(updates, weights)``, e.g. inside a hierarchy),
    where the weights are used as given.
    """

    def finish(self, acc: RunningSum, state: Any, *, info: RoundInfo) -> tuple[torch.Tensor, Any]:
        total, _, weight, count = acc
        if not weight > 0:
            raise ValueError(
                f"the weights of the {count} updates sum to {weight}; the weighted mean needs "
                "a positive total (does the weighting give every client weight 0?)"
            )
        return (total / weight).to(torch.float32), state

    # the stacked form, for trees of rules and one-off calls
    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return weighted_mean(updates, weights)

    def aggregate(
        self,
        updates: torch.Tensor,
        weights: torch.Tensor,
        state: Any,
        client_ids: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        return weighted_mean(updates, weights), state

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return weighted_mean(updates, weights)


@dataclass(frozen=True)
class Sum(_Streaming):
    """The weighted sum ``sum_k w_k u_k`` (with uniform weights, the plain sum), streaming.

    Defined for any number of updates, none included (the sum is then zero), so a pipeline
    whose aggregate stages must run every round can (DP-FedAvg adds its noise to the empty
    sum; see :attr:`fedloom.aggregate.Pipeline.every_round`)."""

    def finish(self, acc: RunningSum, state: Any, *, info: RoundInfo) -> tuple[torch.Tensor, Any]:
        return acc[0].to(torch.float32), state

    def min_updates(self) -> int:
        return 0
