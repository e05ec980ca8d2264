"""A centralized dataset before it is split across clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one dataset.

    Attributes:
        name: e.g. ``"mnist"``.
        train_x, train_y: float32 inputs and int64 labels used for federated training.
        test_x, test_y: the global test set, never given to clients.
        num_classes: number of labels.
        train_owner: for data with a natural federation (LEAF Synthetic devices, writers,
            hospitals), the owner id of each training example; ``None`` otherwise.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_owner: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError(f"{self.name}: inputs and labels differ in length")
        if self.train_owner is not None and len(self.train_owner) != len(self.train_y):
            raise ValueError(f"{self.name}: train_owner must have one id per training example")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_y)
