"""Evaluate a global model on the global test set and on every client's held-out split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fedloom.data import FederatedDataset
from fedloom.params import buffer_spec, param_spec
from fedloom.tasks import Batch, Task, classification, num_rows, take

__all__ = ["Evaluator", "spread_metrics"]


def spread_metrics(
    accuracies: np.ndarray,
    prefix: str = "client_accuracy",
    *,
    sizes: np.ndarray | None = None,
    higher_is_better: bool = True,
) -> dict[str, float]:
    """Mean, std, and the mean of the worst and best 10% (at least one client) of scores.

    With ``sizes`` (each client's number of training examples) also the mean score of the
    smallest 10% of clients (``_smallest10``): the ones example weighting neglects. Where
    lower is better (an error), the worst clients are those with the highest values.
    """
    if len(accuracies) == 0:
        return {}
    ordered = np.sort(accuracies) if higher_is_better else np.sort(accuracies)[::-1]
    tail = max(int(np.ceil(0.1 * len(ordered))), 1)
    metrics = {
        f"{prefix}_mean": float(ordered.mean()),
        f"{prefix}_std": float(ordered.std()),
        f"{prefix}_worst10": float(ordered[:tail].mean()),
        f"{prefix}_best10": float(ordered[-tail:].mean()),
    }
    if sizes is not None:
        smallest = np.argsort(sizes, kind="stable")[:tail]
        metrics[f"{prefix}_smallest10"] = float(accuracies[smallest].mean())
    return metrics


class Evaluator:
    """Batched, gradient-free evaluation through ``functional_call`` on a template module.

    Metric names come from the task (:mod:`fedloom.tasks`): ``test_loss`` and
    ``test_<metric>`` on the global test set, ``client_<score>_*`` for the spread of the
    task's score over the clients' held-out splits.
    """

    def __init__(
        self,
        module: nn.Module,
        data: FederatedDataset,
        *,
        task: Task | None = None,
        batch_size: int = 2048,
    ):
        self.module = module
        self.task = task or classification()
        self.spec = param_spec(module)
        self.buffer_spec = buffer_spec(module)
        self.data = data
        self.batch_size = batch_size
        holdout = [np.asarray(ix) for ix in data.client_holdout]
        self._holdout_index = torch.from_numpy(np.concatenate(holdout)) if holdout else None
        self._holdout_owner = np.repeat(np.arange(data.num_clients), [len(ix) for ix in holdout])
        self._holdout_sizes = np.array([len(ix) for ix in holdout])

    @torch.no_grad()
    def _outputs(self, params: torch.Tensor, buffers: torch.Tensor, batch: Batch) -> torch.Tensor:
        self.module.eval()
        tensors = {**self.spec.views(params), **self.buffer_spec.views(buffers)}
        inputs = self.task.model_inputs(batch)
        return torch.cat(
            [
                functional_call(
                    self.module, tensors, tuple(t[i : i + self.batch_size] for t in inputs)
                )
                for i in range(0, num_rows(batch), self.batch_size)
            ]
        )

    def _mean_metrics(self, outputs: torch.Tensor, batch: Batch, prefix: str) -> dict[str, float]:
        values = self.task.example_metrics(outputs, batch)
        means = {name: np.asarray(float(v.mean())) for name, v in values.items()}
        return {f"{prefix}{name}": float(v) for name, v in self.task.summarize(means).items()}

    def global_metrics(self, params: torch.Tensor, buffers: torch.Tensor) -> dict[str, float]:
        """``test_loss`` (the task's mean loss) and ``test_<metric>`` for each of the task's
        metrics (``test_accuracy`` for classification) on the global test set."""
        batch = self.data.dataset.test_batch()
        outputs = self._outputs(params, buffers, batch)
        return {
            "test_loss": float(self.task.batch_loss(outputs, batch)),
            **self._mean_metrics(outputs, batch, "test_"),
        }

    def train_metrics(self, params: torch.Tensor, buffers: torch.Tensor) -> dict[str, float]:
        """``train_loss_global``: the task's mean loss over every client's training split, the
        objective ``sum_k p_k F_k`` with example weights (what the FedProx paper plots)."""
        index = torch.from_numpy(np.concatenate(self.data.client_train).astype(np.int64))
        batch = self.data.dataset.train_batch(index)
        outputs = self._outputs(params, buffers, batch)
        return {"train_loss_global": float(self.task.batch_loss(outputs, batch))}

    def client_train_losses(
        self, client_ids: Sequence[int], params: torch.Tensor, buffers: torch.Tensor
    ) -> list[float]:
        """Each client's mean loss of the model on its training split, ``F_k(w)`` (what
        power-of-choice selection asks its candidates, :mod:`fedloom.data.selection`)."""
        losses = []
        for client_id in client_ids:
            index = np.asarray(self.data.client_train[client_id], dtype=np.int64)
            batch = self.data.dataset.train_batch(torch.from_numpy(index))
            outputs = self._outputs(params, buffers, batch)
            losses.append(float(self.task.batch_loss(outputs, batch)))
        return losses

    def client_scores(
        self,
        params: torch.Tensor,
        buffers: torch.Tensor,
        client_buffers: Mapping[int, torch.Tensor] | None = None,
        client_params: Mapping[int, torch.Tensor] | None = None,
    ) -> np.ndarray:
        """The task's score of the global model on each client's held-out split (NaN if it
        has none): accuracy for classification.

        With ``client_buffers`` (buffers kept local), each client is evaluated with its own
        buffers when it has trained before; with ``client_params`` (personalized models:
        the global shared part and the client's personal part), with its own parameters when
        it has them.
        """
        summaries = self.client_summaries(params, buffers, client_buffers, client_params)
        return summaries[self.task.score]

    def client_summaries(
        self,
        params: torch.Tensor,
        buffers: torch.Tensor,
        client_buffers: Mapping[int, torch.Tensor] | None = None,
        client_params: Mapping[int, torch.Tensor] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every reported metric of the task on each client's held-out split, one entry per
        client (NaN where a client has none): accuracy, and whatever else the task reports
        (adversarial fairness: the adversary's accuracy and the fairness gaps per client).
        ``client_buffers`` and ``client_params`` as in :meth:`client_scores`."""
        nan = np.full(self.data.num_clients, np.nan)
        if self._holdout_index is None or len(self._holdout_index) == 0:
            return {self.task.score: nan}
        holdout = self.data.dataset.train_batch(self._holdout_index)
        values = self.task.example_metrics(self._outputs(params, buffers, holdout), holdout)
        per_example = {name: v.numpy().astype(np.float64) for name, v in values.items()}
        client_buffers = client_buffers or {}
        client_params = client_params or {}
        for client_id in sorted(set(client_buffers) | set(client_params)):
            own = client_buffers.get(client_id, buffers)
            own_params = client_params.get(client_id, params)
            rows = self._holdout_owner == client_id
            if rows.any():
                own_batch = take(holdout, torch.from_numpy(rows))
                own_outputs = self._outputs(own_params, own, own_batch)
                own_values = self.task.example_metrics(own_outputs, own_batch)
                for name, value in own_values.items():
                    per_example[name][rows] = value.numpy()
        has = self._holdout_sizes > 0
        means = {}
        for name, array in per_example.items():
            sums = np.bincount(self._holdout_owner, weights=array, minlength=self.data.num_clients)
            means[name] = sums[has] / self._holdout_sizes[has]
        summaries = {}
        for name, summary in self.task.summarize(means).items():
            column = nan.copy()
            column[has] = summary
            summaries[name] = column
        return summaries

    def client_metrics(
        self,
        params: torch.Tensor,
        buffers: torch.Tensor,
        client_buffers: Mapping[int, torch.Tensor] | None = None,
        client_params: Mapping[int, torch.Tensor] | None = None,
        *,
        prefix: str = "client",
    ) -> dict[str, float]:
        """Spread of the per-client held-out score (see :func:`spread_metrics`), including
        the smallest clients' score: ``client_accuracy_mean`` ... for classification;
        ``prefix="client_personal"`` with ``client_params`` names the personalized models'
        spread ``client_personal_accuracy_mean`` ...."""
        scores = self.client_scores(params, buffers, client_buffers, client_params)
        return self.score_spread(scores, prefix=prefix)

    def score_spread(self, scores: np.ndarray, *, prefix: str = "client") -> dict[str, float]:
        """:meth:`client_metrics` of per-client ``scores`` already computed by
        :meth:`client_scores` (clients without held-out rows, NaN, are left out)."""
        measured = ~np.isnan(scores)
        sizes = np.asarray(self.data.client_sizes)[measured]
        return spread_metrics(
            scores[measured],
            f"{prefix}_{self.task.score}",
            sizes=sizes,
            higher_is_better=self.task.higher_is_better,
        )
