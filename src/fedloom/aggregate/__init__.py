"""Aggregation as a pipeline of stages: weighting -> per-client stages -> reducer -> aggregate
stages, over flat update vectors (see ``docs/pipeline.md``).

- the stage kinds and ``chain``: :mod:`fedloom.aggregate.stage`;
- the pipeline and its round (``begin`` / ``fold`` / ``finish``): :mod:`.pipeline`;
- per-client stages: :mod:`.weighting`, :mod:`.clip`;
- reducers: :mod:`.mean` (streaming), :mod:`.robust` and :mod:`.hierarchy` (stacked);
- aggregate stages: :mod:`.transforms` (server learning rate and optimizers).
"""

from fedloom.aggregate.clip import Clip, clip
from fedloom.aggregate.hierarchy import Group, Hierarchical, contiguous_tree
from fedloom.aggregate.mean import Mean, Sum, weighted_mean
from fedloom.aggregate.pipeline import (
    Outcome,
    Pipeline,
    RoundAggregation,
    aggregate_stack,
    begin,
    finish,
    fold,
    fold_contribution,
    pipeline,
)
from fedloom.aggregate.robust import (
    AGGREGATORS,
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    TrimmedMean,
)
from fedloom.aggregate.stacked import Stacked
from fedloom.aggregate.stage import (
    ClientStage,
    Cohort,
    Contribution,
    PerClient,
    Reducer,
    RoundInfo,
    ServerStage,
    chain,
)
from fedloom.aggregate.transforms import (
    Transform,
    adagrad,
    adam,
    identity,
    scale,
    server_momentum,
    yogi,
)
from fedloom.aggregate.weighting import (
    WEIGHTINGS,
    ByExamples,
    InverseVariance,
    Uniform,
    WeightBy,
    Weighting,
    client_weights,
    weighting_stage,
)

__all__ = [
    "AGGREGATORS",
    "WEIGHTINGS",
    "Bulyan",
    "ByExamples",
    "CenteredClipping",
    "ClientStage",
    "Clip",
    "Cohort",
    "Contribution",
    "CoordinateMedian",
    "GeometricMedian",
    "Group",
    "Hierarchical",
    "InverseVariance",
    "Krum",
    "Mean",
    "Outcome",
    "PerClient",
    "Pipeline",
    "Reducer",
    "RoundAggregation",
    "RoundInfo",
    "ServerStage",
    "Stacked",
    "Sum",
    "Transform",
    "TrimmedMean",
    "Uniform",
    "WeightBy",
    "Weighting",
    "adagrad",
    "adam",
    "aggregate_stack",
    "begin",
    "chain",
    "clip",
    "client_weights",
    "contiguous_tree",
    "finish",
    "fold",
    "fold_contribution",
    "identity",
    "pipeline",
    "scale",
    "server_momentum",
    "weighted_mean",
    "weighting_stage",
    "yogi",
]
