"""The run configuration: pydantic models, YAML in, resolved YAML out.

This is the only place where strings become choices. Names of algorithms, aggregation
rules, partitions, models, tasks and engines are looked up in :data:`fedloom.registry.REGISTRY`, so
a registered entry is usable from YAML at once; every invalid value produces one line
naming the field and what is allowed. One module per section:

- :mod:`~fedloom.config.data`: the data set and its partition;
- :mod:`~fedloom.config.server`: aggregation rules, clipping, hierarchy, validation;
- :mod:`~fedloom.config.algorithms`: the registered algorithms and their options;
- :mod:`~fedloom.config.engines`: the registered simulation engines;
- :mod:`~fedloom.config.run`: the run as a whole, the smaller sections, YAML and ``--set``;
- :mod:`~fedloom.config.build`: the objects a config describes;
- :mod:`~fedloom.config.spec`: a whole run built once (:func:`build_run`), for simulation
  and deployment alike.
"""

from fedloom.config.algorithms import SERVER_OPTIONS, register_algorithm
from fedloom.config.build import (
    NUM_CLASSES,
    build_algorithm,
    build_attack,
    build_federated,
    build_local_training,
    build_local_work,
    build_model,
    build_task,
)
from fedloom.config.data import DataConfig, build_dataset, build_partitioner
from fedloom.config.engines import register_engine
from fedloom.config.run import (
    AttackConfig,
    ClientConfig,
    DeployConfig,
    EvalConfig,
    ModelConfig,
    OutputConfig,
    RunConfig,
    apply_overrides,
    load_config,
)
from fedloom.config.server import (
    ServerConfig,
    build_aggregator,
    build_client_store,
    build_policy,
    build_rule,
)
from fedloom.config.spec import RunSpec, build_run

__all__ = [
    "NUM_CLASSES",
    "SERVER_OPTIONS",
    "AttackConfig",
    "ClientConfig",
    "DataConfig",
    "DeployConfig",
    "EvalConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "RunSpec",
    "ServerConfig",
    "apply_overrides",
    "build_aggregator",
    "build_algorithm",
    "build_attack",
    "build_dataset",
    "build_federated",
    "build_local_training",
    "build_local_work",
    "build_model",
    "build_partitioner",
    "build_client_store",
    "build_policy",
    "build_rule",
    "build_run",
    "build_task",
    "load_config",
    "register_algorithm",
    "register_engine",
]
