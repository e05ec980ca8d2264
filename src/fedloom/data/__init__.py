"""Datasets, partitioners and the federated view of a dataset."""

from fedloom.data import partition
from fedloom.data.clusters import apply_clusters, cluster_ids
from fedloom.data.dataset import Dataset
from fedloom.data.digits import load_digits
from fedloom.data.federated import FederatedDataset, federate
from fedloom.data.hf import FlowerPartitioner, from_hf, load_hf
from fedloom.data.leaf import load_femnist, load_shakespeare
from fedloom.data.mnist import default_data_root, load_mnist
from fedloom.data.partitioners import (
    IID,
    Dirichlet,
    Natural,
    Partitioner,
    QuantitySkew,
    RareClass,
    Shards,
)
from fedloom.data.sampling import cohort_size, sample_cohort
from fedloom.data.synthetic import load_synthetic
from fedloom.data.task_sequence import TaskSequence, task_data
from fedloom.data.torch_data import from_torch
from fedloom.data.vision import load_cifar10, load_emnist, load_fashion_mnist

__all__ = [
    "IID",
    "Dataset",
    "Dirichlet",
    "FlowerPartitioner",
    "Natural",
    "Partitioner",
    "QuantitySkew",
    "RareClass",
    "Shards",
    "TaskSequence",
    "apply_clusters",
    "cluster_ids",
    "FederatedDataset",
    "cohort_size",
    "default_data_root",
    "federate",
    "from_hf",
    "from_torch",
    "load_cifar10",
    "load_digits",
    "load_emnist",
    "load_fashion_mnist",
    "load_femnist",
    "load_hf",
    "load_mnist",
    "load_shakespeare",
    "load_synthetic",
    "partition",
    "sample_cohort",
    "task_data",
]
