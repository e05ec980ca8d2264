"""Aggregation: weighting, reducers and server transforms over flat update vectors."""

from fedloom.aggregate.mean import weighted_mean
from fedloom.aggregate.transforms import Transform, chain, identity, scale
from fedloom.aggregate.weighting import WEIGHTINGS, Weighting, client_weights

__all__ = [
    "WEIGHTINGS",
    "Transform",
    "Weighting",
    "chain",
    "client_weights",
    "identity",
    "scale",
    "weighted_mean",
]
