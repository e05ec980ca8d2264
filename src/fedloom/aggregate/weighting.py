"""How much each client's update counts: the weighting stage, first of the per-client stages.

Each weighting is a per-client stage that sets the contribution's (un-normalized) weight;
the reducer normalizes (the mean divides by the total weight). A name picks one of:

- ``"examples"`` (default, McMahan et al. 2017): ``n_k``. Unbiased for the global empirical
  risk, but large clients dominate (the "tyranny of the majority").
- ``"uniform"``: ``1``. Every participant counts the same; fairer to small clients, biased
  towards them when objectives differ.
- ``"inverse_variance"``: ``1 / v_k``, where ``v_k`` is the variance of client k's update
  that the client estimates from its own gradients (``sigma_k^2 / n_k``, see
  :func:`fedloom.client.gradient_noise`). When every client's data has the same per-example
  noise this is example weighting again; it down-weights noisy clients. The catch: a small
  client whose data is uniform (one label, near-duplicates) has a tiny gradient variance
  and gets an outsized weight, although its update is the most biased of all.

Anything else is a function ``contribution -> weight`` (:class:`WeightBy`) or a stage of
one's own. The pipeline also averages the float buffers (batch-norm statistics) with the
weights this stage gives, before any later stage changes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import torch

from fedloom.aggregate.stage import ClientStage, Contribution, PerClient, RoundInfo
from fedloom.types import ClientResult

__all__ = [
    "WEIGHTINGS",
    "ByExamples",
    "InverseVariance",
    "Uniform",
    "WeightBy",
    "Weighting",
    "client_weights",
    "contribution_of",
    "weighting_stage",
]

Weighting = str | ClientStage | Callable[[Contribution], float]

WEIGHTINGS = ("examples", "uniform", "inverse_variance")

# The smallest variance believed: a client reporting 0 would otherwise take all the weight.
MIN_VARIANCE = 1e-30


def contribution_of(result: ClientResult) -> Contribution:
    """A client result as it enters the pipeline (weight 1 until the weighting stage)."""
    return Contribution(
        update=result.update,
        weight=1.0,
        client_id=result.client_id,
        num_examples=result.num_examples,
        num_steps=result.num_steps,
        statistics=result.statistics,
    )


@dataclass(frozen=True)
class ByExamples(PerClient):
    """``w_k = n_k``."""

    @property
    def name(self) -> str:
        return "examples"

    def update(self, contribution: Contribution, state: object, *, info: RoundInfo) -> Contribution:
        return replace(contribution, weight=float(contribution.num_examples))


@dataclass(frozen=True)
class Uniform(PerClient):
    """``w_k = 1``."""

    @property
    def name(self) -> str:
        return "uniform"

    def update(self, contribution: Contribution, state: object, *, info: RoundInfo) -> Contribution:
        return replace(contribution, weight=1.0)


@dataclass(frozen=True)
class InverseVariance(PerClient):
    """``w_k = 1 / v_k`` from the client's ``update_variance`` statistic."""

    statistics = frozenset({"update_variance"})

    @property
    def name(self) -> str:
        return "inverse_variance"

    def update(self, contribution: Contribution, state: object, *, info: RoundInfo) -> Contribution:
        v = contribution.statistics.get("update_variance")
        if v is None or not math.isfinite(v) or v < 0:
            raise ValueError(
                f"inverse_variance weighting needs each client's update_variance statistic "
                f"(a finite number >= 0, from at least 2 local steps); client "
                f"{contribution.client_id} reported {v!r} after {contribution.num_steps} steps"
            )
        return replace(contribution, weight=1.0 / max(v, MIN_VARIANCE))


@dataclass(frozen=True)
class WeightBy(PerClient):
    """``w_k = fn(contribution)``: any weighting of one's own."""

    fn: Callable[[Contribution], float]

    @property
    def name(self) -> str:
        return f"weight_by({getattr(self.fn, '__name__', 'fn')})"

    def update(self, contribution: Contribution, state: object, *, info: RoundInfo) -> Contribution:
        return replace(contribution, weight=float(self.fn(contribution)))


def weighting_stage(weighting: Weighting) -> ClientStage:
    """The stage for a weighting name, a stage, or a function ``contribution -> weight``."""
    if isinstance(weighting, str):
        stages: dict[str, ClientStage] = {
            "examples": ByExamples(),
            "uniform": Uniform(),
            "inverse_variance": InverseVariance(),
        }
        if weighting not in stages:
            raise ValueError(
                f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}, a stage or a function"
            )
        return stages[weighting]
    if getattr(weighting, "kind", None) == "client":
        return cast(ClientStage, weighting)
    if callable(weighting):
        return WeightBy(cast(Callable[[Contribution], float], weighting))
    raise ValueError(
        f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}, a stage or a function"
    )


def client_weights(results: Sequence[ClientResult], weighting: Weighting) -> torch.Tensor:
    """Normalized float32 weights, one per result, summing to 1 (for inspection and tests;
    the pipeline itself never builds this vector)."""
    if not results:
        raise ValueError("cannot weight an empty cohort")
    stage = weighting_stage(weighting)
    state = stage.init(torch.zeros(0))
    raw = []
    for result in results:
        weight = stage.update(contribution_of(result), state, info=RoundInfo()).weight
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"weights must be finite non-negative numbers; client {result.client_id} got "
                f"{weight}"
            )
        raw.append(weight)
    total = torch.tensor(raw, dtype=torch.float64)
    if total.sum() <= 0:
        raise ValueError("weights sum to zero")
    return (total / total.sum()).to(torch.float32)
