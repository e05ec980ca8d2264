"""Client selection: which of the population's clients a round asks to train.

``server.sampling`` decides how many clients a round samples (:mod:`fedloom.data.sampling`);
a selection rule decides *which*. Every rule is a frozen dataclass with
``select(num_clients, fraction, *, seed, round, losses, sizes) -> Selected``, derived from
(seed, round) and what it is given alone, so a resumed run selects the same cohorts:

- :class:`UniformSelection` (the default): ``m = max(round(C K), 1)`` clients uniformly
  without replacement, exactly :func:`~fedloom.data.sampling.sample_cohort` (McMahan et al.
  2017), so runs without a selection rule are unchanged.
- :class:`PowerOfChoice` (Cho, Wang and Joshi 2022, "Towards Understanding Biased Client
  Selection in Federated Learning", Algorithm ``pow-d``): draw ``d >= m`` candidates without
  replacement with probability proportional to their data size (uniformly when the sizes
  are unknown), ask each for its local loss ``F_k(w_t)`` on the current global model, and
  select the ``m`` with the highest loss (ties: the lower id). The loss query is not free:
  the ``d`` candidates each download the model and upload one float32, counted in the
  round's ``selection_queries``, ``selection_bytes_down`` and ``selection_bytes_up``.
- :class:`AvailabilitySelection`: each client is available in a round with its own
  probability (one for all, or one per client), drawn from (seed, round); the round selects
  ``m`` uniformly among the available ones, or all of them when fewer are
  (``selection_available``).

A plug-in point for more: :func:`register_selection` (``server.selection.name`` then names
it, with its options as the section's other keys).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedloom.data.sampling import cohort_size, sample_cohort
from fedloom.rng import numpy_rng

__all__ = [
    "SELECTIONS",
    "AvailabilitySelection",
    "ClientLosses",
    "PowerOfChoice",
    "Selected",
    "Selection",
    "UniformSelection",
    "register_selection",
]

ClientLosses = Callable[[Sequence[int]], Sequence[float]]
"""``losses(client_ids)``: each client's mean training loss on the current global model."""


@dataclass(frozen=True)
class Selected:
    """A round's cohort (sorted client ids) and what selecting it cost or saw."""

    client_ids: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


class Selection(Protocol):
    """A client selection rule (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def needs_losses(self) -> bool: ...

    def select(
        self,
        num_clients: int,
        fraction: float,
        *,
        seed: int,
        round: int,
        losses: ClientLosses | None = None,
        sizes: np.ndarray | None = None,
    ) -> Selected: ...


@dataclass(frozen=True)
class UniformSelection:
    """``m`` clients uniformly without replacement (the default)."""

    name: str = "uniform"
    needs_losses: bool = False

    def select(self, num_clients: int, fraction: float, *, seed: int, round: int,
               losses: ClientLosses | None = None, sizes: np.ndarray | None = None) -> Selected:  # fmt: skip
        return Selected(sample_cohort(num_clients, fraction, seed=seed, round=round))


@dataclass(frozen=True)
class PowerOfChoice:
    """Cho et al. 2022's power-of-choice: the ``m`` highest-loss clients of ``d`` candidates.

    >>> rule = PowerOfChoice(d=10)
    >>> rule.select(10, 0.3, seed=0, round=0, losses=lambda ids: [float(k) for k in ids]).client_ids
    array([7, 8, 9])
    """

    d: int
    name: str = "power_of_choice"
    needs_losses: bool = True

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"d (candidates) must be >= 1, got {self.d}")

    def select(self, num_clients: int, fraction: float, *, seed: int, round: int,
               losses: ClientLosses | None = None, sizes: np.ndarray | None = None) -> Selected:  # fmt: skip
        m = cohort_size(num_clients, fraction)
        if self.d < m:
            raise ValueError(f"d = {self.d} candidates cannot give a cohort of {m}: d >= m")
        if losses is None:
            raise ValueError("power of choice needs the candidates' losses")
        d = min(self.d, num_clients)
        p = None
        if sizes is not None:
            weights = np.asarray(sizes, dtype=np.float64)
            p = weights / weights.sum() if np.count_nonzero(weights) >= d else None
        rng = numpy_rng(seed, "select/candidates", round)
        candidates = np.sort(rng.choice(num_clients, size=d, replace=False, p=p))
        values = np.asarray(losses([int(k) for k in candidates]), dtype=np.float64)
        order = np.lexsort((candidates, -values))  # highest loss first, then the lower id
        chosen = np.sort(candidates[order[:m]]).astype(np.int64)
        return Selected(chosen, {"selection_queries": float(d)})


@dataclass(frozen=True)
class AvailabilitySelection:
    """``m`` clients uniformly among those available this round, each available with its
    probability (``probability`` for all, or ``probabilities`` one per client).

    >>> rule = AvailabilitySelection(probabilities=(1.0, 0.0, 1.0, 0.0))
    >>> rule.select(4, 0.5, seed=0, round=0).client_ids
    array([0, 2])
    """

    probability: float = 1.0
    probabilities: tuple[float, ...] | None = None
    name: str = "availability"
    needs_losses: bool = False

    def __post_init__(self) -> None:
        values = self.probabilities if self.probabilities is not None else (self.probability,)
        bad = [p for p in values if not 0.0 <= p <= 1.0]
        if bad:
            raise ValueError(f"availability probabilities must be in [0, 1], got {bad[:3]}")

    def select(self, num_clients: int, fraction: float, *, seed: int, round: int,
               losses: ClientLosses | None = None, sizes: np.ndarray | None = None) -> Selected:  # fmt: skip
        if self.probabilities is not None and len(self.probabilities) != num_clients:
            raise ValueError(
                f"{len(self.probabilities)} availability probabilities for {num_clients} clients"
            )
        p = np.asarray(self.probabilities if self.probabilities is not None else [self.probability])
        draws = numpy_rng(seed, "select/available", round).random(num_clients)
        available = np.flatnonzero(draws < p)
        m = min(cohort_size(num_clients, fraction), len(available))
        chosen = numpy_rng(seed, "select/among", round).choice(available, size=m, replace=False)
        return Selected(
            np.sort(chosen).astype(np.int64), {"selection_available": float(len(available))}
        )


SELECTIONS: dict[str, Callable[..., Any]] = {
    "uniform": UniformSelection,
    "power_of_choice": PowerOfChoice,
    "availability": AvailabilitySelection,
}
"""Selection rules by name: a factory taking the rule's options as keywords."""


def register_selection(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(**options)`` selectable as ``server.selection.name: <name>``; a taken
    name is an error."""
    if name in SELECTIONS:
        raise ValueError(f"selection {name!r} is taken by {SELECTIONS[name]!r}")
    SELECTIONS[name] = factory
