"""Evaluate a global model on the global test set and on every client's held-out split."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedloom.data import FederatedDataset
from fedloom.params import buffer_spec, param_spec

__all__ = ["Evaluator", "spread_metrics"]


def spread_metrics(
    accuracies: np.ndarray,
    prefix: str = "client_accuracy",
    *,
    sizes: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean, std, and the mean of the worst and best 10% (at least one client) of accuracies.

    With ``sizes`` (each client's number of training examples) also the mean accuracy of the
    smallest 10% of clients (``_smallest10``): the ones example weighting neglects.
    """
    if len(accuracies) == 0:
        return {}
    ordered = np.sort(accuracies)
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
    """Batched, gradient-free evaluation through ``functional_call`` on a template module."""

    def __init__(self, module: nn.Module, data: FederatedDataset, *, batch_size: int = 2048):
        self.module = module
        self.spec = param_spec(module)
        self.buffer_spec = buffer_spec(module)
        self.data = data
        self.batch_size = batch_size
        holdout = [np.asarray(ix) for ix in data.client_holdout]
        self._holdout_index = torch.from_numpy(np.concatenate(holdout)) if holdout else None
        self._holdout_owner = np.repeat(np.arange(data.num_clients), [len(ix) for ix in holdout])
        self._holdout_sizes = np.array([len(ix) for ix in holdout])

    @torch.no_grad()
    def _logits(self, params: torch.Tensor, buffers: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        tensors = {**self.spec.views(params), **self.buffer_spec.views(buffers)}
        return torch.cat(
            [
                functional_call(self.module, tensors, (x[i : i + self.batch_size],))
                for i in range(0, len(x), self.batch_size)
            ]
        )

    def global_metrics(self, params: torch.Tensor, buffers: torch.Tensor) -> dict[str, float]:
        """``test_loss`` (mean cross-entropy) and ``test_accuracy`` on the global test set."""
        dataset = self.data.dataset
        logits = self._logits(params, buffers, dataset.test_x)
        return {
            "test_loss": float(F.cross_entropy(logits, dataset.test_y)),
            "test_accuracy": float((logits.argmax(1) == dataset.test_y).float().mean()),
        }

    def train_metrics(self, params: torch.Tensor, buffers: torch.Tensor) -> dict[str, float]:
        """``train_loss_global``: the mean cross-entropy over every client's training split,
        the objective ``sum_k p_k F_k`` with example weights (what the FedProx paper plots)."""
        index = torch.from_numpy(np.concatenate(self.data.client_train).astype(np.int64))
        dataset = self.data.dataset
        logits = self._logits(params, buffers, dataset.train_x[index])
        return {"train_loss_global": float(F.cross_entropy(logits, dataset.train_y[index]))}

    def client_accuracies(
        self,
        params: torch.Tensor,
        buffers: torch.Tensor,
        client_buffers: Mapping[int, torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Accuracy of the global model on each client's held-out split (NaN if it has none).

        With ``client_buffers`` (buffers kept local), each client is evaluated with its own
        buffers when it has trained before.
        """
        accuracies = np.full(self.data.num_clients, np.nan)
        if self._holdout_index is None or len(self._holdout_index) == 0:
            return accuracies
        x = self.data.dataset.train_x[self._holdout_index]
        y = self.data.dataset.train_y[self._holdout_index]
        correct = (self._logits(params, buffers, x).argmax(1) == y).numpy()
        if client_buffers:
            for client_id, own in client_buffers.items():
                rows = self._holdout_owner == client_id
                if rows.any():
                    own_logits = self._logits(params, own, x[torch.from_numpy(rows)])
                    correct[rows] = (own_logits.argmax(1) == y[torch.from_numpy(rows)]).numpy()
        sums = np.bincount(self._holdout_owner, weights=correct, minlength=self.data.num_clients)
        has = self._holdout_sizes > 0
        accuracies[has] = sums[has] / self._holdout_sizes[has]
        return accuracies

    def client_metrics(
        self,
        params: torch.Tensor,
        buffers: torch.Tensor,
        client_buffers: Mapping[int, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Spread of per-client held-out accuracy (see :func:`spread_metrics`), including the
        smallest clients' accuracy."""
        accuracies = self.client_accuracies(params, buffers, client_buffers)
        measured = ~np.isnan(accuracies)
        sizes = np.asarray(self.data.client_sizes)[measured]
        return spread_metrics(accuracies[measured], sizes=sizes)
