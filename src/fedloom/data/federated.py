"""A dataset split across clients, with a local held-out split for each client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.data.partition import check_partition
from fedloom.data.partitioners import Partitioner
from fedloom.errors import DataError
from fedloom.rng import numpy_rng

__all__ = ["FederatedDataset", "federate"]


@dataclass(frozen=True)
class FederatedDataset:
    """Which examples each client holds.

    ``client_train[k]`` and ``client_holdout[k]`` index into ``dataset.train_x``; the two
    are disjoint and together are client k's whole share. The global test set stays on the
    server side (``dataset.test_x``).
    """

    dataset: Dataset
    client_train: tuple[np.ndarray, ...]
    client_holdout: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.client_train)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def client_sizes(self) -> np.ndarray:
        """Training examples per client (``n_k``, the FedAvg weights)."""
        return np.array([len(ix) for ix in self.client_train], dtype=np.int64)

    def client_data(self, client_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Client ``client_id``'s training inputs and labels (:meth:`client_batch` has every
        named tensor)."""
        index = torch.from_numpy(self.client_train[client_id])
        return self.dataset.train_x[index], self.dataset.train_y[index]

    def client_batch(self, client_id: int) -> dict[str, torch.Tensor]:
        """Client ``client_id``'s training split as a named batch (``x``, ``y`` and extras)."""
        return self.dataset.train_batch(torch.from_numpy(self.client_train[client_id]))

    def label_histograms(self) -> np.ndarray:
        """``[num_clients, num_classes]`` label counts of each client's training split."""
        labels = self.dataset.train_y.numpy()
        return np.stack(
            [np.bincount(labels[ix], minlength=self.num_classes) for ix in self.client_train]
        )

    def describe(self) -> list[dict[str, object]]:
        """One row per client: id, train and holdout sizes, label count, label histogram."""
        hist = self.label_histograms()
        return [
            {
                "client": k,
                "train": int(len(self.client_train[k])),
                "holdout": int(len(self.client_holdout[k])),
                "labels": int(np.count_nonzero(hist[k])),
                "histogram": hist[k].tolist(),
            }
            for k in range(self.num_clients)
        ]


def federate(
    dataset: Dataset,
    partition: Sequence[np.ndarray] | Partitioner,
    *,
    holdout_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedDataset:
    """Split ``dataset`` across clients and carve a local held-out split from each share.

    Args:
        dataset: the centralized data.
        partition: either index arrays (one per client) or a partitioner
            ``(dataset, rng) -> index arrays`` such as ``Shards(num_clients=100)``; see
            :mod:`fedloom.data.partitioners`. Every example must go to exactly one client,
            unless the partitioner says ``exhaustive = False`` (:class:`RareClass`).
        holdout_fraction: share of each client's examples kept for per-client evaluation
            (at least one example always stays for training).
        seed: seeds the partition and the holdout split.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    parts = partition(dataset, numpy_rng(seed, "partition")) if callable(partition) else partition
    parts = [np.asarray(p, dtype=np.int64) for p in parts]
    check_partition(parts, dataset.num_train, exhaustive=getattr(partition, "exhaustive", True))
    empty = [k for k, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise DataError(f"clients {empty[:10]} received no examples; use fewer clients")
    train, holdout = [], []
    for k, part in enumerate(parts):
        shuffled = numpy_rng(seed, "holdout", k).permutation(part)
        num_holdout = min(int(round(len(part) * holdout_fraction)), len(part) - 1)
        holdout.append(np.sort(shuffled[:num_holdout]))
        train.append(np.sort(shuffled[num_holdout:]))
    return FederatedDataset(dataset, tuple(train), tuple(holdout))
