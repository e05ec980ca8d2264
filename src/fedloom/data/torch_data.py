"""Bring your own ``torch.utils.data.Dataset`` per client.

Users with a data pipeline of their own usually hold one PyTorch data set per client (a
hospital's scans, a phone's keystrokes). :func:`from_torch` reads each once into tensors
and records which client every example came from (``train_owner``), so the natural
partition (:class:`~fedloom.data.Natural`) gives every client exactly its own data set.
Everything is read into memory: fedloom's engines slice and stack clients' tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.errors import DataError

__all__ = ["from_torch"]


def _stack(dataset: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(x, y)`` items of a map-style or iterable data set, stacked."""
    xs, ys = [], []
    for item in dataset:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(
                f"{what}: items must be (input, label) pairs, got {type(item).__name__}"
            )
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    if not xs:
        raise DataError(f"{what} is empty")
    try:
        return torch.stack(xs), torch.stack(ys).long()
    except RuntimeError as exc:
        raise DataError(f"{what}: inputs differ in shape ({exc})") from None


def from_torch(
    clients: Sequence[Any],
    test: Any,
    *,
    num_classes: int | None = None,
    name: str = "torch",
) -> Dataset:
    """A :class:`Dataset` whose training examples are the clients' data sets, in order.

    Args:
        clients: one ``torch.utils.data.Dataset`` (or any iterable of ``(x, y)`` pairs) per
            client; client ``k`` owns its examples (``train_owner == k``).
        test: the global test set, in the same form.
        num_classes: the number of labels; by default the largest label seen plus one.
        name: shown in logs.

    >>> from torch.utils.data import TensorDataset
    >>> a = TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    >>> b = TensorDataset(torch.ones(2, 2), torch.tensor([1, 1]))
    >>> from_torch([a, b], b).train_owner.tolist()
    [0, 0, 0, 1, 1]
    """
    if not clients:
        raise DataError("from_torch needs at least one client data set")
    parts = [_stack(c, f"client {k}'s data set") for k, c in enumerate(clients)]
    test_x, test_y = _stack(test, "the test set")
    train_x = torch.cat([x for x, _ in parts])
    train_y = torch.cat([y for _, y in parts])
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max())) + 1
    owners = np.concatenate([np.full(len(y), k, dtype=np.int64) for k, (_, y) in enumerate(parts)])
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes, train_owner=owners)
