"""Systems heterogeneity: how much local work each sampled client does in a round.

Real devices differ: some run fewer local steps because they are slow, busy or on battery.
:class:`LocalWork` describes that in simulation, and :func:`assign_work` turns it into
per-client overrides in the round's plans, drawn from the run seed (the same for every
engine).

- ``low``/``high``: every client's work is drawn uniformly from ``{low, ..., high}``, in the
  unit of the local settings (epochs, or steps when ``steps`` is set): afresh every round
  (``redraw="round"``), or once per client for the whole run (``redraw="never"``: a device's
  speed is a property of the device, the setting in which FedAvg's objective inconsistency
  does not average out).
- ``straggler_fraction``: that share of the sampled clients (rounded) are stragglers; each
  does a number of units drawn uniformly from ``{1, ..., full - 1}`` (1 when the full amount
  is 1), as in the FedProx paper's code. ``drop_stragglers`` chooses what happens to their
  work: FedAvg as published drops it (the straggler is left out of the round); FedProx
  keeps the partial update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fedloom.client import LocalTraining
from fedloom.rng import numpy_rng
from fedloom.types import ClientPlan

__all__ = ["LocalWork", "assign_work"]


@dataclass(frozen=True)
class LocalWork:
    """Per-client local work in a round (see the module docstring)."""

    low: int | None = None
    high: int | None = None
    straggler_fraction: float = 0.0
    drop_stragglers: bool = False
    redraw: str = "round"

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("set both low and high for heterogeneous local work, or neither")
        if self.low is not None and self.high is not None and not 1 <= self.low <= self.high:
            raise ValueError(f"need 1 <= low <= high, got low={self.low}, high={self.high}")
        if self.redraw not in ("round", "never"):
            raise ValueError(f"redraw must be 'round' or 'never', got {self.redraw!r}")
        if not 0 <= self.straggler_fraction <= 1:
            raise ValueError(f"straggler_fraction must be in [0, 1], got {self.straggler_fraction}")

    @property
    def is_uniform(self) -> bool:
        """Every client does the configured amount of work (no overrides needed)."""
        return self.low is None and self.straggler_fraction == 0


def assign_work(
    plans: Sequence[ClientPlan], work: LocalWork, settings: LocalTraining, *, seed: int
) -> tuple[list[ClientPlan], list[ClientPlan]]:
    """``(plans to train, stragglers dropped)`` with each plan's work override.

    Draws depend only on ``(seed, round, client)`` and the cohort, never on the engine.
    """
    if work.is_uniform or not plans:
        return list(plans), []
    unit = "steps" if settings.steps is not None else "epochs"
    full = settings.steps if settings.steps is not None else settings.epochs
    round_ = plans[0].round
    rng = numpy_rng(seed, "work", round_)
    assigned: list[ClientPlan] = []
    for plan in plans:
        amount = full
        if work.low is not None and work.high is not None:
            draw = rng if work.redraw == "round" else numpy_rng(seed, "work", plan.client_id)
            amount = int(draw.integers(work.low, work.high + 1))
        assigned.append(_with_amount(plan, unit, amount))
    num_stragglers = round(work.straggler_fraction * len(plans))
    stragglers = set(rng.choice(len(plans), size=num_stragglers, replace=False).tolist())
    kept, dropped = [], []
    for position, plan in enumerate(assigned):
        if position not in stragglers:
            kept.append(plan)
            continue
        if work.drop_stragglers:
            dropped.append(plan)
            continue
        top = _amount(plan, unit) - 1
        amount = int(rng.integers(1, top + 1)) if top >= 1 else 1
        kept.append(_with_amount(plan, unit, amount))
    return kept, dropped


def _with_amount(plan: ClientPlan, unit: str, amount: int) -> ClientPlan:
    return replace(plan, steps=amount) if unit == "steps" else replace(plan, epochs=amount)


def _amount(plan: ClientPlan, unit: str) -> int:
    value = plan.steps if unit == "steps" else plan.epochs
    if value is None:
        raise ValueError(f"plan for client {plan.client_id} has no {unit} set")
    return value
