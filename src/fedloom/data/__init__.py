"""Datasets, partitioners and the federated view of a dataset."""

from fedloom.data import partition
from fedloom.data.dataset import Dataset
from fedloom.data.digits import load_digits
from fedloom.data.federated import FederatedDataset, federate
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

__all__ = [
    "IID",
    "Dataset",
    "Dirichlet",
    "Natural",
    "Partitioner",
    "QuantitySkew",
    "RareClass",
    "Shards",
    "TaskSequence",
    "FederatedDataset",
    "cohort_size",
    "default_data_root",
    "federate",
    "load_digits",
    "load_mnist",
    "load_synthetic",
    "partition",
    "sample_cohort",
    "task_data",
]
