"""Early stopping on a plateau, and the best model by a chosen metric.

Both are callbacks: they read each round's metrics and never change a round, so they work on
every engine and in deployment alike. A metric is only present in rounds that evaluate
(``eval.every``); the other rounds are not counted. Both rebuild their bookkeeping from the
reports of a resumed run, so a resume stops where the uninterrupted run would have.

``mode`` says which direction is better: ``"max"`` (accuracy), ``"min"`` (a loss), or
``"auto"``: ``"min"`` when the name contains ``loss``, ``error`` or ``perplexity``,
``"max"`` otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from fedloom.algorithms import ServerState
from fedloom.engine.callbacks import Callback
from fedloom.errors import ConfigError
from fedloom.model_file import load_model, save_model
from fedloom.types import RoundReport

__all__ = [
    "BEST_MODEL_FILE",
    "BestModel",
    "EarlyStopping",
    "Improvement",
    "resolve_mode",
    "stopping_summary",
]

BEST_MODEL_FILE = "best_model.safetensors"

log = logging.getLogger("fedloom")

Mode = Literal["auto", "max", "min"]
_LOWER_IS_BETTER = ("loss", "error", "perplexity")


def resolve_mode(metric: str, mode: Mode) -> Literal["max", "min"]:
    """``mode``, with ``"auto"`` decided from the metric's name."""
    if mode != "auto":
        return mode
    return "min" if any(word in metric for word in _LOWER_IS_BETTER) else "max"


@dataclass
class Improvement:
    """The best value of one metric so far, and whether a new value beats it by ``min_delta``.

    >>> best = Improvement("test_loss", "auto", min_delta=0.1)
    >>> [best.offer(v) for v in (1.0, 0.95, 0.8)]
    [True, False, True]
    """

    metric: str
    mode: Mode = "auto"
    min_delta: float = 0.0
    best: float = math.nan
    best_round: int = 0

    def __post_init__(self) -> None:
        if self.min_delta < 0:
            raise ConfigError(f"min_delta must be >= 0, got {self.min_delta}")

    def offer(self, value: float, round: int = 0) -> bool:
        """Take the round's value; ``True`` when it is the new best."""
        if math.isnan(value):
            return False
        sign = 1.0 if resolve_mode(self.metric, self.mode) == "max" else -1.0
        if math.isnan(self.best) or sign * (value - self.best) > self.min_delta:
            self.best, self.best_round = value, round
            return True
        return False

    def value(self, report: RoundReport) -> float | None:
        """The metric in ``report``; ``None`` in a round that did not evaluate. A round that
        evaluated without it means the name is wrong: a clear error naming what exists."""
        if self.metric in report.metrics:
            return float(report.metrics[self.metric])
        evaluated = any(name.startswith("test_") for name in report.metrics)
        if evaluated:
            known = sorted(n for n in report.metrics if not n.startswith(("num_", "bytes_")))
            raise ConfigError(
                f"metric {self.metric!r} is not among this run's metrics: {', '.join(known)}"
            )
        return None


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations in a row without an improvement of ``metric`` by
    more than ``min_delta`` (the Keras and PyTorch Lightning rule)."""

    def __init__(self, metric: str, *, patience: int = 10, min_delta: float = 0.0,
                 mode: Mode = "auto"):  # fmt: skip
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.tracker = Improvement(metric, mode, min_delta)
        self.patience = patience
        self.waited = 0
        self.reason: str | None = None

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        for report in reports:  # a run that had stopped early stays stopped
            self._count(report)

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        self._count(report)

    def _count(self, report: RoundReport) -> None:
        value = self.tracker.value(report)
        if value is None:
            return
        if self.tracker.offer(value, report.round):
            self.waited = 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.stop_requested = True
            self.reason = (
                f"early stopping: {self.tracker.metric} has not improved on its best "
                f"{self.tracker.best:.4g} (round {self.tracker.best_round}) for "
                f"{self.waited} evaluations"
            )
            log.warning("round %d: %s", report.round, self.reason)


class BestModel(Callback):
    """Keep the global model of the round with the best ``metric``.

    ``params`` and ``buffers`` hold it in memory; with ``path`` (and the ``module`` whose
    architecture it is) it is also written as a model file at every improvement, which is
    how a resumed run gets it back.
    """

    def __init__(self, metric: str, *, mode: Mode = "auto", path: Path | None = None,
                 module: nn.Module | None = None):  # fmt: skip
        if path is not None and module is None:
            raise ValueError("BestModel needs the module to write a model file")
        self.tracker = Improvement(metric, mode)
        self.path, self.module = path, module
        self.params: torch.Tensor | None = None
        self.buffers: torch.Tensor | None = None

    @property
    def best_round(self) -> int:
        return self.tracker.best_round

    @property
    def best_value(self) -> float:
        return self.tracker.best

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        for report in reports:
            value = self.tracker.value(report)
            if value is not None:
                self.tracker.offer(value, report.round)
        if self.path is not None and self.module is not None and self.path.is_file():
            self.params, self.buffers = load_model(self.path, self.module)

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        value = self.tracker.value(report)
        if value is None or not self.tracker.offer(value, report.round):
            return
        self.params, self.buffers = state.params.clone(), state.buffers.clone()
        if self.path is not None and self.module is not None:
            save_model(self.path, self.module, self.params, self.buffers)


def stopping_summary(callbacks: Sequence[Callback]) -> dict[str, float | str]:
    """What the run's summary says about them: why it stopped early, and the best round."""
    summary: dict[str, float | str] = {}
    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.reason is not None:
            summary["stopped_early"] = callback.reason
        if isinstance(callback, BestModel) and callback.best_round:
            summary["best_round"] = callback.best_round
            summary[f"best_{callback.tracker.metric}"] = callback.best_value
    return summary
