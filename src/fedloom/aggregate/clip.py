"""Norm clipping of each client's update, a per-client stage.

``clip(S)`` scales every update with L2 norm above ``S`` down to norm ``S`` and leaves the
others as they are. In front of the mean it bounds what one client can move the model by
(norm bounding, Sun et al. 2019, "Can You Really Backdoor Federated Learning?"); in front of a
robust rule it bounds the outliers the rule sees; in front of a sum with Gaussian noise of
std ``z S`` it bounds each client's sensitivity (DP-FedAvg, McMahan et al. 2018).

The stage counts what it clipped in the tally ``"clip/clipped"`` (the cohort's sum reaches the
aggregate stages and ``end_round``): the fraction of clipped updates that adaptive clipping
(Andrew et al. 2021) steers by.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedloom.aggregate.robust import row_distances
from fedloom.aggregate.stage import Contribution, PerClient, RoundInfo

__all__ = ["Clip", "clip"]


@dataclass(frozen=True)
class Clip(PerClient):
    """Scale an update to L2 norm at most ``max_norm``."""

    max_norm: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {self.max_norm}")

    @property
    def name(self) -> str:
        return "clip"

    def update(self, contribution: Contribution, state: object, *, info: RoundInfo) -> Contribution:
        norm = row_distances(contribution.update[None])  # float64, [1]
        factor = (self.max_norm / norm.clamp(min=1e-30)).clamp(max=1.0)
        if bool(factor >= 1.0):
            return replace(contribution, tallies={**contribution.tallies, "clip/clipped": 0.0})
        return replace(
            contribution,
            update=contribution.update * factor.to(contribution.update.dtype),
            tallies={**contribution.tallies, "clip/clipped": 1.0},
        )


def clip(max_norm: float) -> Clip:
    """The per-client clipping stage.

    >>> import fedloom as fl
    >>> fl.fedavg().with_aggregation(per_client=(clip(5.0),)).aggregation.per_client
    (Clip(max_norm=5.0),)
    """
    return Clip(max_norm)
