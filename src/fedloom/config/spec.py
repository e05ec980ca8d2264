"""A run, built once: everything a :class:`RunConfig` describes, as values.

``fedloom run`` (:func:`fedloom.experiment.run_experiment`), :func:`simulate_config` and the
deployed server (:func:`fedloom.net.deploy.serve`) all start from :func:`build_run`, so a
simulation and a deployment of the same config use the same data split, initial weights,
algorithm, local settings and validation policy by construction, and nothing is built twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fedloom.algorithms import Algorithm
from fedloom.client import LocalTraining
from fedloom.config.build import (
    build_algorithm,
    build_federated,
    build_local_training,
    build_local_work,
    build_model,
    build_task,
)
from fedloom.config.run import RunConfig
from fedloom.config.server import build_policy
from fedloom.data import FederatedDataset
from fedloom.data.sampling import cohort_size
from fedloom.engine import LocalWork, UpdatePolicy
from fedloom.errors import ConfigError
from fedloom.model_file import load_model
from fedloom.models import initial_module
from fedloom.params import load_flat
from fedloom.privacy.dp_fedavg import calibrate
from fedloom.tasks import Task

__all__ = ["RunSpec", "build_run"]


@dataclass(frozen=True)
class RunSpec:
    """The objects of one run.

    Attributes:
        config: the resolved config it was built from.
        data: the federated split (the same for every engine and for deployment).
        algorithm: the algorithm value, with the server's reducer, clipping and weighting.
        model: the model factory; ``module`` is the initial model it gives for the run's seed.
        local: the clients' local settings after the algorithm's overrides (FedSGD).
        work: heterogeneous local work and stragglers (simulation).
        policy: update validation.
        task: what the model learns (loss and metrics), from the ``task`` section.
    """

    config: RunConfig
    data: FederatedDataset
    algorithm: Algorithm
    model: Callable[[], nn.Module]
    module: nn.Module
    local: LocalTraining
    work: LocalWork
    policy: UpdatePolicy
    task: Task


def build_run(config: RunConfig, *, data: FederatedDataset | None = None) -> RunSpec:
    """Build the run ``config`` describes; ``data`` reuses an already partitioned dataset."""
    data = data if data is not None else build_federated(config)
    algorithm = build_algorithm(config, data.num_clients)
    algorithm = calibrate(  # a DP run given only its budget: the noise that spends it exactly
        algorithm,
        population=data.num_clients,
        cohort=cohort_size(data.num_clients, config.server.fraction),
        rounds=config.rounds,
    )
    model = build_model(config, data.dataset)
    task = build_task(config, data)
    module = initial_module(model, seed=config.seed)
    if config.model.init is not None:
        if not Path(config.model.init).is_file():
            raise ConfigError(
                f"model.init: {config.model.init} is not a file (give an earlier run's "
                "model.safetensors)"
            )
        load_flat(module, *load_model(config.model.init, module))
    return RunSpec(
        config=config,
        data=data,
        algorithm=algorithm,
        model=model,
        module=module,
        local=algorithm.local_training(build_local_training(config.client)),
        work=build_local_work(config.client),
        policy=build_policy(config.server),
        task=task,
    )
