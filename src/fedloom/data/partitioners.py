"""Partitioners as values: ``Shards(num_clients=100, shards_per_client=2)(dataset, rng)``.

They wrap the pure functions of :mod:`fedloom.data.partition` with their settings, so that a
partition can be named once, printed, and handed to :func:`fedloom.federate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from fedloom.data import partition
from fedloom.data.dataset import Dataset
from fedloom.errors import DataError

__all__ = ["IID", "Dirichlet", "Natural", "Partitioner", "QuantitySkew", "RareClass", "Shards"]


class Partitioner(Protocol):
    """``(dataset, rng) -> one index array per client``. Every training example goes to
    exactly one client, unless the partitioner has ``exhaustive = False`` (it may leave
    examples out, as :class:`RareClass` does)."""

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class IID:
    """Shuffle and split evenly."""

    num_clients: int

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        return partition.iid(dataset.num_train, self.num_clients, rng=rng)


@dataclass(frozen=True)
class Shards:
    """McMahan et al.'s pathological non-IID split (label-pure shards, S per client)."""

    num_clients: int
    shards_per_client: int = 2

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        return partition.shards(
            dataset.train_y.numpy(),
            self.num_clients,
            shards_per_client=self.shards_per_client,
            rng=rng,
        )


@dataclass(frozen=True)
class Dirichlet:
    """Label skew with concentration ``alpha`` (small = skewed)."""

    num_clients: int
    alpha: float = 0.5

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        return partition.dirichlet(
            dataset.train_y.numpy(), self.num_clients, alpha=self.alpha, rng=rng
        )


@dataclass(frozen=True)
class QuantitySkew:
    """Log-normal client sizes (at least ``min_size``), IID labels."""

    num_clients: int
    sigma: float = 1.0
    min_size: int = 10

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        return partition.quantity_skew(
            dataset.num_train, self.num_clients, sigma=self.sigma, min_size=self.min_size, rng=rng
        )


@dataclass(frozen=True)
class RareClass:
    """Class ``rare_class`` at ``prevalence`` overall, spread over clients by Dir(``alpha``);
    the other classes IID, or Dirichlet(``rest_alpha``) label skew. Leaves out the rare
    class's examples beyond the prevalence (see :func:`fedloom.data.partition.rare_class`).

    >>> import torch
    >>> from fedloom.data import Dataset, federate
    >>> y = torch.arange(1000) % 10
    >>> data = Dataset("toy", torch.zeros(1000, 1), y, torch.zeros(1, 1), y[:1], num_classes=10)
    >>> fed = federate(data, RareClass(5, rare_class=3, prevalence=0.02), holdout_fraction=0)
    >>> int(fed.label_histograms()[:, 3].sum()), int(fed.client_sizes.sum())  # 18 of 918
    (18, 918)
    """

    exhaustive: ClassVar[bool] = False

    num_clients: int
    rare_class: int = 0
    prevalence: float = 0.02
    alpha: float = 0.5
    rest_alpha: float | None = None

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        return partition.rare_class(
            dataset.train_y.numpy(),
            self.num_clients,
            rare_class=self.rare_class,
            prevalence=self.prevalence,
            alpha=self.alpha,
            rest_alpha=self.rest_alpha,
            rng=rng,
        )


@dataclass(frozen=True)
class Natural:
    """One client per natural owner of the data (e.g. a Synthetic device)."""

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        if dataset.train_owner is None:
            raise DataError(
                f"the natural partition needs a dataset with owners (e.g. synthetic); "
                f"{dataset.name} has none. Use IID, Shards, Dirichlet or QuantitySkew."
            )
        return partition.natural(dataset.train_owner)
