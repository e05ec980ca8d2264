"""Staleness weights for asynchronous aggregation: how much a late update still counts.

An update trained on model version ``v`` that reaches a server already at version ``t`` has
staleness ``s = t - v``. Asynchronous methods shrink it by a weight ``w(s)``, ``w(0) = 1``,
decreasing in ``s``. The three families are those of FedAsync (Xie, Koyejo and Gupta 2019,
"Asynchronous Federated Optimization", section 5.2); FedBuff (Nguyen et al. 2022, "Federated
Learning with Buffered Asynchronous Aggregation", section 3) uses the polynomial one with
``a = 1/2``, ``w(s) = 1 / sqrt(1 + s)``, the default here:

- ``constant``: ``w(s) = 1``;
- ``polynomial``: ``w(s) = (1 + s) ** -a``;
- ``hinge``: ``w(s) = 1`` for ``s <= b``, else ``1 / (a (s - b) + 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["STALENESS_KINDS", "Staleness", "StalenessKind"]

StalenessKind = Literal["constant", "polynomial", "hinge"]
STALENESS_KINDS: tuple[StalenessKind, ...] = ("constant", "polynomial", "hinge")


@dataclass(frozen=True)
class Staleness:
    """A staleness weighting ``w(s)`` (see the module docstring).

    >>> Staleness().weight(3)  # 1 / sqrt(1 + 3)
    0.5
    >>> Staleness("hinge", a=1.0, b=2).weight(4)  # 1 / (1 * (4 - 2) + 1)
    0.3333333333333333
    """

    kind: StalenessKind = "polynomial"
    a: float = 0.5
    b: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in STALENESS_KINDS:
            raise ValueError(
                f"staleness kind must be one of {', '.join(STALENESS_KINDS)}, got {self.kind!r}"
            )
        if not (math.isfinite(self.a) and self.a >= 0):
            raise ValueError(f"staleness a must be >= 0, got {self.a!r}")
        if not (math.isfinite(self.b) and self.b >= 0):
            raise ValueError(f"staleness b must be >= 0, got {self.b!r}")

    def weight(self, staleness: int) -> float:
        """``w(s)`` for ``s = staleness >= 0`` (server versions behind)."""
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        if self.kind == "constant":
            return 1.0
        if self.kind == "polynomial":
            return float((1.0 + staleness) ** -self.a)
        if staleness <= self.b:
            return 1.0
        return 1.0 / (self.a * (staleness - self.b) + 1.0)
