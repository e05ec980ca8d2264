"""In-process executors for simulation, and the choice between them."""

from __future__ import annotations

import logging
from typing import Literal

from torch import nn

from fedloom.client import LocalTraining, ObjectiveTerm
from fedloom.data import FederatedDataset
from fedloom.engine import Executor
from fedloom.sim.sequential import SequentialExecutor
from fedloom.sim.vectorized import VectorizedExecutor, vectorization_problem

__all__ = ["ENGINES", "Engine", "SequentialExecutor", "VectorizedExecutor", "make_executor"]

log = logging.getLogger("fedloom")

Engine = Literal["auto", "sequential", "vectorized"]
ENGINES = ("auto", "sequential", "vectorized")


def make_executor(
    engine: Engine,
    module: nn.Module,
    data: FederatedDataset,
    settings: LocalTraining,
    *,
    objective_terms: tuple[ObjectiveTerm, ...] = (),
) -> Executor:
    """The executor for ``engine``.

    ``auto`` is the vectorized engine where the model allows it, else the sequential one. A
    model that cannot be vmapped (batch norm in training mode) falls back to the sequential
    engine with one warning that says why; results are never silently different.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine in ("auto", "vectorized"):
        problem = vectorization_problem(module)
        if problem is None:
            return VectorizedExecutor(module, data, settings, objective_terms=objective_terms)
        log.warning("the vectorized engine cannot train this model (%s); using sequential", problem)
    return SequentialExecutor(module, data, settings, objective_terms=objective_terms)
