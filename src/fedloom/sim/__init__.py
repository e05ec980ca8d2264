"""Simulation executors (sequential, vectorized, process pool) and the choice between them."""

from __future__ import annotations

from torch import nn

from fedloom.client import ClientProgram, LocalTraining
from fedloom.data import FederatedDataset
from fedloom.engine import Executor
from fedloom.names import ENGINES, Engine
from fedloom.registry import REGISTRY
from fedloom.sim.isolation import IsolatedExecutor
from fedloom.sim.process import ProcessExecutor
from fedloom.sim.quadratic import QuadraticExecutor
from fedloom.sim.sequential import SequentialExecutor
from fedloom.sim.vectorized import VectorizedExecutor
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


def make_executor(
    engine: str,
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The executor of the registered ``engine`` (``REGISTRY.entry("engine", name)``).

    Built in: ``sequential`` (the reference); ``vectorized`` (the cohort as one vmapped
    stack); ``auto``, the vectorized engine where the model allows it, else the sequential
    one (a model that cannot be vmapped, batch norm in training mode, falls back with one
    warning that says why; results are never silently different); ``process`` spreads the
    cohort over ``workers`` processes (default: one per core), each running ``auto``; ``ray``
    does the same with Ray actors (joining the current Ray session, or starting a local one
    on 127.0.0.1). Call the executor's ``close()`` when done. A new engine registers a
    factory with this signature (:func:`register_engine`).

    On every engine a client whose training raises (or whose worker process or Ray actor
    dies) comes back as a :class:`~fedloom.types.ClientFailure` and the others train on: the
    vectorized engine is wrapped in an :class:`IsolatedExecutor` that retrains a failed
    cohort client by client with the sequential engine.
    """
    import fedloom.config.engines  # noqa: F401  (registers the built-in engines)

    if engine not in REGISTRY.names("engine"):
        raise ValueError(
            f"unknown engine {engine!r}; use one of {', '.join(REGISTRY.names('engine'))}"
        )
    factory = REGISTRY.entry("engine", engine).factory
    executor: Executor = factory(
        module, data, settings, program=program, task=task, workers=workers
    )
    return executor
