"""Reducers that need every update at once, lifted into the pipeline by stacking.

A rank- or distance-based rule (median, trimmed mean, Krum, Bulyan, the geometric median,
centered clipping, a tree of rules) is a function of the whole ``[K, P]`` matrix, so unlike
the mean it cannot fold updates into a running sum: its reducer copies each arriving update
into a row of one preallocated matrix (``expected`` rows when the round loop knows the cohort
size, doubling when more arrive) and calls the rule once, in ``finish``. Memory is
``K x P x 4`` bytes (6.7 GB for 1,000 updates of the MNIST CNN); the mean streams instead
(:mod:`fedloom.aggregate.mean`).

A rule implements :meth:`Stacked.combine` (stateless) or :meth:`Stacked.aggregate` (with
state across rounds); :class:`Stacked` supplies ``start`` / ``fold`` / ``finish``. The weights
a rule sees are the contributions' weights normalized to sum to 1, in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedloom.aggregate.stage import Contribution, RoundInfo

__all__ = ["Stack", "StackRule", "Stacked", "check_matrix", "normalized_weights"]

INITIAL_ROWS = 8


class StackRule(Protocol):
    """Anything that combines a ``[K, P]`` matrix: a stacked rule or the mean."""

    @property
    def name(self) -> str: ...

    def min_updates(self) -> int: ...

    def aggregate(
        self,
        updates: torch.Tensor,
        weights: torch.Tensor,
        state: Any,
        client_ids: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Any]: ...

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Stack:
    """A round's updates so far: ``rows[:count]`` (one per contribution), their weights and
    their clients. Owned by the reducer's ``fold``, which fills it in place."""

    rows: torch.Tensor
    count: int = 0
    weights: list[float] = field(default_factory=list)
    client_ids: list[int] = field(default_factory=list)


def normalized_weights(raw: Sequence[float]) -> torch.Tensor:
    """Float32 weights summing to 1 (normalized in float64)."""
    values = torch.tensor(list(raw), dtype=torch.float64)
    if not values.sum() > 0:
        raise ValueError(
            f"the weights of the {len(values)} updates sum to zero; need a positive sum"
        )
    return (values / values.sum()).to(torch.float32)


def check_matrix(updates: torch.Tensor, weights: torch.Tensor) -> None:
    if updates.ndim != 2 or weights.shape != (updates.shape[0],):
        raise ValueError(
            f"expected updates [K, P] and weights [K], got {tuple(updates.shape)} and "
            f"{tuple(weights.shape)}"
        )
    if updates.shape[0] == 0:
        raise ValueError("cannot aggregate zero updates")


class Stacked:
    """Base of the stacked rules (frozen dataclasses): the reducer protocol over a stack.

    Subclasses override :meth:`combine`, or :meth:`init` and :meth:`aggregate` when they keep
    state across rounds.
    """

    kind = "reduce"
    stacks = True

    @property
    def name(self) -> str:
        return type(self).__name__

    def init(self, params: torch.Tensor) -> Any:
        """The state before the first round."""
        return None

    def min_updates(self) -> int:
        """The fewest updates this rule is defined for."""
        return 1

    def start(self, params: torch.Tensor, *, expected: int | None = None) -> Stack:
        rows = max(expected or INITIAL_ROWS, 1)
        return Stack(torch.empty(rows, params.numel(), dtype=torch.float32))

    def fold(self, acc: Stack, contribution: Contribution) -> Stack:
        if acc.count == acc.rows.shape[0]:  # more than expected: double the matrix
            grown = torch.empty(2 * acc.count, acc.rows.shape[1], dtype=acc.rows.dtype)
            grown[: acc.count].copy_(acc.rows)
            acc.rows = grown
        acc.rows[acc.count].copy_(contribution.update)
        acc.count += 1
        acc.weights.append(float(contribution.weight))
        acc.client_ids.append(contribution.client_id)
        return acc

    def finish(self, acc: Stack, state: Any, *, info: RoundInfo) -> tuple[torch.Tensor, Any]:
        updates = acc.rows[: acc.count]
        return self.aggregate(updates, normalized_weights(acc.weights), state, acc.client_ids)

    def aggregate(
        self,
        updates: torch.Tensor,
        weights: torch.Tensor,
        state: Any,
        client_ids: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """One round over a stack: the aggregate and the new state. ``client_ids`` (the row
        owners) is read only by rules that group clients (hierarchical aggregation)."""
        check_matrix(updates, weights)
        return self.combine(updates, weights), state

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} keeps state: call aggregate() or the rule")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One aggregation from the initial state (no memory of earlier rounds)."""
        return self.aggregate(updates, weights, self.init(updates.new_zeros(updates.shape[1])))[0]
