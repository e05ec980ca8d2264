"""Clustered non-IID data: clients drawn from a few distinct distributions.

Client ``k`` belongs to cluster ``k mod num_clusters`` (:func:`cluster_ids`), and every row
it owns (its training and held-out rows; each row belongs to exactly one client) is
transformed by its cluster's transform (:func:`apply_clusters`):

- ``rotate``: cluster ``c`` sees its images rotated by ``c * 90`` degrees (rotated MNIST,
  as in Ghosh et al. 2020, "An Efficient Framework for Clustered Federated Learning"; up to
  4 clusters; square images);
- ``permute_labels``: cluster ``c`` sees its labels through a fixed permutation ``pi_c``
  (cluster 0: the identity; the others drawn from the seed), so the same input means a
  different label in each cluster: no single model can fit two clusters at once.

Cluster 0 is left as it is, and so is the global test set (it measures cluster 0's
distribution); the per-client held-out accuracy is the metric that carries each cluster.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fedloom.data.federated import FederatedDataset
from fedloom.rng import numpy_rng

__all__ = ["CLUSTER_KINDS", "apply_clusters", "cluster_ids"]

CLUSTER_KINDS = ("rotate", "permute_labels")


def cluster_ids(num_clients: int, num_clusters: int) -> np.ndarray:
    """``[num_clients]`` cluster of each client: ``k mod num_clusters`` (balanced, and the
    same whatever the seed)."""
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    return np.arange(num_clients) % num_clusters


def apply_clusters(
    data: FederatedDataset, *, kind: str = "rotate", num_clusters: int = 4, seed: int = 0
) -> FederatedDataset:
    """``data`` with each client's rows transformed by its cluster's transform (module
    docstring); the partition itself is unchanged.

    >>> from fedloom.data import IID, federate, load_digits
    >>> data = apply_clusters(federate(load_digits(), IID(8), seed=0), num_clusters=4)
    >>> cluster_ids(data.num_clients, 4).tolist()
    [0, 1, 2, 3, 0, 1, 2, 3]
    """
    if kind not in CLUSTER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CLUSTER_KINDS)}, got {kind!r}")
    if kind == "rotate" and not 1 <= num_clusters <= 4:
        raise ValueError(f"num_clusters must be 1..4 for kind 'rotate', got {num_clusters}")
    clusters = cluster_ids(data.num_clients, num_clusters)
    dataset = data.dataset
    x, y = dataset.train_x.clone(), dataset.train_y.clone()
    if kind == "rotate" and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"kind 'rotate' needs square images, got inputs {tuple(x.shape[1:])}")
    rng = numpy_rng(seed, "clusters")
    permutations = [np.arange(dataset.num_classes)] + [
        rng.permutation(dataset.num_classes) for _ in range(1, num_clusters)
    ]
    for k, cluster in enumerate(clusters.tolist()):
        if cluster == 0:
            continue
        rows = torch.from_numpy(np.concatenate([data.client_train[k], data.client_holdout[k]]))
        if kind == "rotate":
            x[rows] = torch.rot90(x[rows], k=cluster, dims=(-2, -1))
        else:
            y[rows] = torch.from_numpy(permutations[cluster])[y[rows]]
    return replace(data, dataset=replace(dataset, train_x=x, train_y=y))
