"""Simulation executors (sequential, vectorized, process pool) and the choice between them."""

from __future__ import annotations

import logging

from torch import nn

from fedloom.client import ClientProgram, LocalTraining
from fedloom.data import FederatedDataset
from fedloom.engine import Executor
from fedloom.names import ENGINES, Engine
from fedloom.sim.isolation import IsolatedExecutor
from fedloom.sim.process import ProcessExecutor
from fedloom.sim.quadratic import QuadraticExecutor
from fedloom.sim.sequential import SequentialExecutor
from fedloom.sim.vectorized import VectorizedExecutor, vectorization_problem
from fedloom.tasks import Task

__all__ = [
    "ENGINES",
    "Engine",
    "IsolatedExecutor",
    "ProcessExecutor",
    "QuadraticExecutor",
    "SequentialExecutor",
    "VectorizedExecutor",
    "make_executor",
]

log = logging.getLogger("fedloom")


def make_executor(
    engine: Engine,
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The executor for ``engine``.

    ``auto`` is the vectorized engine where the model allows it, else the sequential one. A
    model that cannot be vmapped (batch norm in training mode) falls back to the sequential
    engine with one warning that says why; results are never silently different. ``process``
    spreads the cohort over ``workers`` processes (default: one per core), each running
    ``auto``; ``ray`` does the same with Ray actors (joining the current Ray session, or
    starting a local one on 127.0.0.1). Call the executor's ``close()`` when done.

    On every engine a client whose training raises (or whose worker process or Ray actor
    dies) comes back as a :class:`~fedloom.types.ClientFailure` and the others train on: the
    vectorized engine is wrapped in an :class:`IsolatedExecutor` that retrains a failed
    cohort client by client with the sequential engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "process":
        return ProcessExecutor(
            module, data, settings, program=program, task=task, num_workers=workers
        )
    if engine == "ray":
        from fedloom.sim.ray_executor import RayExecutor  # Ray is an optional dependency

        return RayExecutor(module, data, settings, program=program, task=task, num_workers=workers)
    if engine in ("auto", "vectorized"):
        problem = vectorization_problem(module)
        if problem is None:
            return IsolatedExecutor(
                VectorizedExecutor(module, data, settings, program=program, task=task),
                lambda: SequentialExecutor(module, data, settings, program=program, task=task),
            )
        log.warning("the vectorized engine cannot train this model (%s); using sequential", problem)
    return SequentialExecutor(module, data, settings, program=program, task=task)
