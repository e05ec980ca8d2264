"""One failing client must not take its cohort down with it.

Two pieces, used by the simulation engines:

- :func:`train_or_fail` runs one client's training and turns an exception into a
  :class:`~fedloom.types.ClientFailure` (client, round, ``"Type: message"``). The sequential
  engine trains every client through it.
- :class:`IsolatedExecutor` wraps an engine that trains a whole cohort in one computation
  (the vectorized engine's vmapped stack). An exception there cannot be attributed to one
  row, so the cohort is trained again, client by client, with the reference engine: exactly
  the failing clients become failures, and the others' results are the reference engine's
  (equal to the cohort engine's to float32 round-off). A round without failures costs
  nothing extra.

Only ``Exception`` is caught: ``KeyboardInterrupt`` and ``SystemExit`` still stop the run.
A worker process or Ray actor that dies is the pool engines' concern
(:mod:`fedloom.sim.process`, :mod:`fedloom.sim.ray_executor`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch

from fedloom.client import LocalContext
from fedloom.engine import Executor
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["IsolatedExecutor", "engine_name", "error_summary", "train_or_fail"]

log = logging.getLogger("fedloom")

MAX_SUMMARY_CHARS = 300


def error_summary(error: BaseException) -> str:
    """``"Type: first line of the message"``, at most :data:`MAX_SUMMARY_CHARS` long.

    >>> error_summary(ValueError("bad label\\nmore detail"))
    'ValueError: bad label'
    """
    lines = str(error).strip().splitlines()
    summary = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if len(summary) > MAX_SUMMARY_CHARS:
        summary = summary[: MAX_SUMMARY_CHARS - 3] + "..."
    return summary


def train_or_fail(
    plan: ClientPlan, train: Callable[[], ClientResult]
) -> ClientResult | ClientFailure:
    """``train()``, or the failure of ``plan``'s client if it raises.

    The traceback goes to the ``fedloom`` logger at debug level; the round loop logs the
    one-line summary.
    """
    try:
        return train()
    except Exception as error:
        log.debug(
            "round %d: client %d raised during training", plan.round + 1, plan.client_id,
            exc_info=True,
        )  # fmt: skip
        return ClientFailure(plan.client_id, error_summary(error), round=plan.round)


class IsolatedExecutor:
    """A cohort engine whose failures are narrowed down to the clients that caused them.

    Args:
        cohort: the engine that trains the whole cohort at once (vectorized).
        reference: builds the engine that trains clients one by one and returns a failure
            for each client that raises (sequential); called once, at the first failure.
    """

    def __init__(self, cohort: Executor, reference: Callable[[], Executor]):
        self.cohort = cohort
        self._make_reference = reference
        self._reference: Executor | None = None

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        try:
            return self.cohort.fit(plans, params, buffers, context)
        except Exception as error:
            round_number = plans[0].round + 1 if plans else 0
            log.info(
                "round %d: the %s of %d clients raised (%s); training them one by one to find "
                "the failing ones",
                round_number, engine_name(self), len(plans), error_summary(error),
            )  # fmt: skip
        if self._reference is None:
            self._reference = self._make_reference()
        return self._reference.fit(plans, params, buffers, context)


def engine_name(executor: Executor) -> str:
    """The class name of the engine that trains the cohort, seen through the wrapper."""
    inner = executor.cohort if isinstance(executor, IsolatedExecutor) else executor
    return type(inner).__name__
