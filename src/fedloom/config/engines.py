"""The simulation engines as registry entries: a name in ``engine:`` maps to a factory.

The factories import :mod:`fedloom.sim` only when called, so a config (and a deployed
server, which validates one) never loads the simulation modules. A new engine is one
:func:`register_engine` call with a factory of the same signature.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedloom.names import ENGINES
from fedloom.registry import REGISTRY, section_from_factory

if TYPE_CHECKING:
    from torch import nn

    from fedloom.client import ClientProgram, LocalTraining
    from fedloom.data import FederatedDataset
    from fedloom.engine import Executor
    from fedloom.tasks import Task

__all__ = ["EngineFactory", "register_engine"]

log = logging.getLogger("fedloom")

EngineFactory = Callable[..., "Executor"]
"""``factory(module, data, settings, *, program, task, workers) -> Executor``."""


def register_engine(
    name: str, factory: EngineFactory, *, summary: str | None = None, replace: bool = False
) -> None:
    """Make ``name`` an engine: usable as ``engine: name`` in a config, ``--engine`` and
    :func:`fedloom.simulate`. Its help text is ``summary``, or the first line of the
    factory's docstring. Engines take no options of their own (``workers`` is a top-level
    key)."""
    section = section_from_factory("engine", name, lambda: None)
    section.__doc__ = summary or (factory.__doc__ or name).strip().splitlines()[0]
    REGISTRY.register("engine", name, factory, section=section, replace=replace)


def _sequential(
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The reference: one client after another, in this process."""
    from fedloom.sim import SequentialExecutor

    return SequentialExecutor(module, data, settings, program=program, task=task)


def _vectorized(
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The cohort as one vmapped stack (sequential where the model cannot be vmapped)."""
    from fedloom.sim import IsolatedExecutor, SequentialExecutor, VectorizedExecutor
    from fedloom.sim.vectorized import vectorization_problem

    problem = vectorization_problem(module)
    if problem is None:
        return IsolatedExecutor(
            VectorizedExecutor(module, data, settings, program=program, task=task),
            lambda: SequentialExecutor(module, data, settings, program=program, task=task),
        )
    log.warning("the vectorized engine cannot train this model (%s); using sequential", problem)
    return _sequential(module, data, settings, program=program, task=task)


def _process(
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The cohort spread over a pool of worker processes (workers: default one per core)."""
    from fedloom.sim import ProcessExecutor

    return ProcessExecutor(module, data, settings, program=program, task=task, num_workers=workers)


def _ray(
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    program: ClientProgram | None = None,
    task: Task | None = None,
    workers: int | None = None,
) -> Executor:
    """The cohort spread over Ray actors (a local cluster on 127.0.0.1 if none is running)."""
    from fedloom.sim.ray_executor import RayExecutor  # Ray is an optional dependency

    return RayExecutor(module, data, settings, program=program, task=task, num_workers=workers)


AUTO = "The default: the vectorized engine where the model allows it, else sequential."

_BUILT_IN: dict[str, EngineFactory] = {
    "auto": _vectorized,  # which falls back to sequential where vmap cannot run
    "sequential": _sequential,
    "vectorized": _vectorized,
    "process": _process,
    "ray": _ray,
}
assert tuple(_BUILT_IN) == tuple(sorted(_BUILT_IN, key=ENGINES.index))  # one list: names.py
for _name, _factory in _BUILT_IN.items():
    if _name not in REGISTRY.names("engine"):
        register_engine(_name, _factory, summary=AUTO if _name == "auto" else None)
