"""Experiment tracking: TensorBoard event files and MLflow runs, as callbacks.

Both observe the round loop like the metrics files do, so simulated and deployed runs are
tracked the same way, and neither costs anything when it is off (their libraries are
imported only when a tracker starts). TensorBoard gets every metric as a scalar per round
and histograms of per-client values (training loss, update norm, examples); MLflow gets the
resolved config as parameters, every metric per round, and the final model as an artifact.
A resumed run continues the same MLflow run (its id is kept in the run directory) and
appends to the same TensorBoard folder.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedloom.algorithms import ServerState
from fedloom.engine import Callback, History
from fedloom.types import RoundReport

__all__ = ["MLflowLogger", "TensorBoardLogger", "flat_params"]

MLFLOW_RUN_FILE = "mlflow.json"
"""In the run directory: the MLflow run id, so a resumed run logs into the same run."""


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


class TensorBoardLogger(Callback):
    """Scalars per round and per-client histograms into ``log_dir`` (``tensorboard
    --logdir`` shows them)."""

    wants_clients = True

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        for name, value in _finite(report.metrics).items():
            self.writer.add_scalar(name, value, global_step=report.round)
        for name, values in report.clients.items():
            if values:
                self.writer.add_histogram(
                    f"clients/{name}", np.asarray(values, dtype=np.float64), report.round
                )
        self.writer.flush()

    def on_end(self, history: History) -> None:
        if self.writer is not None:
            self.writer.close()


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: dotted keys, string values (JSON for lists).

    >>> flat_params({"client": {"lr": 0.1, "epochs": 3}, "name": None})
    {'client.lr': '0.1', 'client.epochs': '3', 'name': 'None'}
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{prefix}{key}."))
        elif isinstance(value, list | tuple):
            out[f"{prefix}{key}"] = json.dumps(value)
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class MLflowLogger(Callback):
    """Log a run to MLflow at ``tracking_uri`` (``sqlite:///mlflow.db``, a folder, or an
    ``http://`` tracking server): parameters, metrics per round, the final model.

    ``run_dir`` (optional) keeps the MLflow run id so that a resumed run continues it;
    ``module`` (optional) lets the final model be logged as ``model.safetensors``. Metrics
    are sent in batches, at most every ``flush_every_s`` seconds and at the end, without the
    round loop waiting: a store round trip per round would cost short rounds 15%
    (``benchmarks/tracking_overhead.py``).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str = "fedloom",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        module: nn.Module | None = None,
        flush_every_s: float = 2.0,
    ):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.run_dir = run_dir
        self.module = module
        self.run_id: str | None = None
        self._client: Any = None
        self._pending: list[Any] = []
        self._buffer: list[Any] = []
        self.flush_every_s = flush_every_s
        self._flushed = time.monotonic()

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        known = self._known_run()
        if known is not None:
            self.run_id = known
            return
        experiment = self._client.get_experiment_by_name(self.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(self.experiment)
        )
        run = self._client.create_run(experiment_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        if self.run_dir is not None:
            (self.run_dir / MLFLOW_RUN_FILE).write_text(
                json.dumps({"run_id": self.run_id, "tracking_uri": self.tracking_uri})
            )
        for key, value in flat_params(self.params).items():
            self._client.log_param(self.run_id, key, value[:6000])

    def _known_run(self) -> str | None:
        if self.run_dir is None or not (self.run_dir / MLFLOW_RUN_FILE).is_file():
            return None
        known = json.loads((self.run_dir / MLFLOW_RUN_FILE).read_text())
        if known.get("tracking_uri") != self.tracking_uri:
            return None
        return str(known["run_id"])

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        from mlflow.entities import Metric

        stamp = 0  # the round is the step; wall-clock stamps would make reruns differ
        self._buffer.extend(
            Metric(name, value, stamp, report.round)
            for name, value in _finite(report.metrics).items()
        )
        if time.monotonic() - self._flushed >= self.flush_every_s:
            self._flush()

    def _flush(self) -> None:
        """Send the buffered metrics, asynchronously (MLflow takes at most 1000 a batch)."""
        for start in range(0, len(self._buffer), 1000):
            batch = self._buffer[start : start + 1000]
            self._pending.append(
                self._client.log_batch(self.run_id, metrics=batch, synchronous=False)
            )
        self._buffer.clear()
        self._flushed = time.monotonic()

    def on_end(self, history: History) -> None:
        if self._client is None or self.run_id is None:
            return
        self._flush()
        for operation in self._pending:  # every round's metrics are stored before the end
            operation.wait()
        self._pending.clear()
        if self.module is not None:
            from fedloom.model_file import save_model

            final = history.final_state
            with tempfile.TemporaryDirectory() as folder:
                path = save_model(
                    Path(folder) / "model.safetensors", self.module, final.params, final.buffers
                )
                self._client.log_artifact(self.run_id, str(path))
        self._client.set_terminated(self.run_id)
