"""Alternating updates: each client trains in phases, one executor per phase, in order.

Some two-player models are trained by alternating who learns: adversarial fairness's
``mode: alternating`` (:mod:`fedloom.tasks.adversarial`) first trains the adversary with the
predictor frozen, then the predictor against the frozen adversary. A model says so by
``training_phases()``: the same model (shared parameters, same :class:`ParamSpec`) once per
phase, each letting a different part learn. :class:`AlternatingExecutor` runs a round's
cohort through one executor per phase (any engine: sequential, vectorized, process, Ray),
each phase starting where the previous one ended for that client, with its own batch order
(the plan's seed mixed with the phase number). The client's update is its final parameters
minus the broadcast model, as for any executor, so the server and every algorithm see one
ordinary result per client.

Update transforms (local DP) and reported statistics belong to the whole round: only the
last phase applies the transforms, ``initial_loss`` comes from the first phase, step counts
and example passes add up, and ``train_loss`` is the last phase's.

Simulation only: a deployed client trains one phase (its plain loss), so the deployment
refuses such a model (:func:`training_phases`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from fedloom.client import ClientProgram, LocalContext
from fedloom.engine import Executor
from fedloom.rng import derive_seed
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["AlternatingExecutor", "phased_executor", "training_phases"]


def training_phases(module: nn.Module) -> tuple[nn.Module, ...]:
    """The model's training phases (``module.training_phases()``), or ``()`` for a model
    trained in one phase."""
    phases = getattr(module, "training_phases", None)
    return tuple(phases()) if callable(phases) else ()


class AlternatingExecutor:
    """Run ``executors`` one after the other on the same cohort (module docstring)."""

    def __init__(self, executors: Sequence[Executor]):
        if len(executors) < 2:
            raise ValueError(f"alternating needs at least two phases, got {len(executors)}")
        self.executors = tuple(executors)

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        done: dict[int, ClientResult | ClientFailure] = {}
        first: dict[int, ClientResult] = {}
        current = list(plans)
        for phase, executor in enumerate(self.executors):
            if not current:
                break
            phase_plans = [
                replace(p, seed=derive_seed(p.seed, "phase", phase)) if phase else p
                for p in current
            ]
            outcomes = {o.client_id: o for o in executor.fit(phase_plans, params, buffers, context)}
            following = []
            for plan in current:
                outcome = outcomes[plan.client_id]
                if isinstance(outcome, ClientFailure):
                    done[plan.client_id] = outcome
                    continue
                earlier = first.get(plan.client_id)
                merged = outcome if earlier is None else _after(earlier, outcome)
                first[plan.client_id] = merged
                following.append(replace(plan, start=params + outcome.update))
            current = following
        for client_id, result in first.items():
            done.setdefault(client_id, result)
        return [done[p.client_id] for p in plans]

    def close(self) -> None:
        for executor in self.executors:
            close = getattr(executor, "close", None)
            if close is not None:
                close()


def _after(earlier: ClientResult, later: ClientResult) -> ClientResult:
    """``later`` (the whole round's update) with the work of both phases counted."""
    statistics = dict(later.statistics)
    if "initial_loss" in earlier.statistics:
        statistics["initial_loss"] = earlier.statistics["initial_loss"]
    return replace(
        later,
        num_steps=earlier.num_steps + later.num_steps,
        num_example_passes=earlier.num_example_passes + later.num_example_passes,
        statistics=statistics,
    )


def phased_executor(
    module: nn.Module,
    program: ClientProgram,
    make: Callable[[nn.Module, ClientProgram], Executor],
) -> Executor:
    """``make(module, program)``, or, for a model with training phases, an
    :class:`AlternatingExecutor` of one ``make(phase, program)`` per phase (the update
    transforms only in the last)."""
    phases = training_phases(module)
    if not phases:
        return make(module, program)
    quiet = replace(program, update_transforms=())
    return AlternatingExecutor(
        [make(phase, program if i == len(phases) - 1 else quiet) for i, phase in enumerate(phases)]
    )
