"""A centralized dataset before it is split across clients."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

__all__ = ["Dataset", "raw_pixels", "standardized"]

_RESERVED = ("x", "y")


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
        train_extra, test_extra: more named tensors with one row per example (an attention
            mask, a sequence length ...). They travel with ``x`` and ``y`` into every batch
            (:attr:`fedloom.tasks.Task.inputs` says which ones the model receives; the loss
            and metrics see them all). Both must name the same entries.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_owner: np.ndarray | None = None
    train_extra: Mapping[str, torch.Tensor] = field(default_factory=dict, hash=False)
    test_extra: Mapping[str, torch.Tensor] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError(f"{self.name}: inputs and labels differ in length")
        if self.train_owner is not None and len(self.train_owner) != len(self.train_y):
            raise ValueError(f"{self.name}: train_owner must have one id per training example")
        if set(self.train_extra) != set(self.test_extra):
            raise ValueError(
                f"{self.name}: train_extra {sorted(self.train_extra)} and test_extra "
                f"{sorted(self.test_extra)} must name the same entries"
            )
        for split, extra, rows in (
            ("train_extra", self.train_extra, len(self.train_y)),
            ("test_extra", self.test_extra, len(self.test_y)),
        ):
            for name, tensor in extra.items():
                if name in _RESERVED or not name.isidentifier():
                    raise ValueError(
                        f"{self.name}: {split} entry {name!r} must be an identifier other "
                        f"than {_RESERVED}"
                    )
                if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0 or len(tensor) != rows:
                    raise ValueError(
                        f"{self.name}: {split}[{name!r}] must be a tensor with one row per "
                        f"example ({rows})"
                    )

    def train_batch(self, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training examples ``index`` (all of them by default) as a named batch."""
        batch = {"x": self.train_x, "y": self.train_y, **self.train_extra}
        return batch if index is None else {name: t[index] for name, t in batch.items()}

    def test_batch(self) -> dict[str, torch.Tensor]:
        """The global test set as a named batch."""
        return {"x": self.test_x, "y": self.test_y, **self.test_extra}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_y)


def standardized(dataset: Dataset) -> Dataset:
    """``dataset`` with inputs shifted and scaled by the training set's overall mean and
    standard deviation (one scalar pair, computed from ``train_x`` only, so the test set
    tells nothing to the transform); inputs that already are standardized come back as they
    are (to float rounding)."""
    mean = float(dataset.train_x.double().mean())
    std = float(dataset.train_x.double().std())
    if std == 0:
        raise ValueError(f"{dataset.name}: the training inputs are constant; nothing to scale")
    return replace(
        dataset,
        train_x=((dataset.train_x - mean) / std).to(dataset.train_x.dtype),
        test_x=((dataset.test_x - mean) / std).to(dataset.test_x.dtype),
    )


def raw_pixels(dataset: Dataset, mean: float, std: float) -> Dataset:
    """Undo a standardization by ``mean`` and ``std``: inputs back on their raw scale."""
    return replace(
        dataset, train_x=dataset.train_x * std + mean, test_x=dataset.test_x * std + mean
    )
