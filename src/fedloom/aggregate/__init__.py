"""Aggregation: weighting, reducers and server transforms over flat update vectors."""

from fedloom.aggregate.hierarchy import Group, Hierarchical, contiguous_tree
from fedloom.aggregate.mean import weighted_mean
from fedloom.aggregate.robust import (
    AGGREGATORS,
    Aggregator,
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    NormBound,
    TrimmedMean,
)
from fedloom.aggregate.transforms import (
    Transform,
    adagrad,
    adam,
    chain,
    identity,
    scale,
    server_momentum,
    yogi,
)
from fedloom.aggregate.weighting import WEIGHTINGS, Weighting, client_weights

__all__ = [
    "AGGREGATORS",
    "WEIGHTINGS",
    "Aggregator",
    "Bulyan",
    "CenteredClipping",
    "CoordinateMedian",
    "GeometricMedian",
    "Group",
    "Hierarchical",
    "Krum",
    "Mean",
    "NormBound",
    "TrimmedMean",
    "Transform",
    "Weighting",
    "adagrad",
    "adam",
    "chain",
    "client_weights",
    "contiguous_tree",
    "identity",
    "scale",
    "server_momentum",
    "weighted_mean",
    "yogi",
]
