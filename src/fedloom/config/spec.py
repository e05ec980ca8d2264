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
from fedloom.algorithms.personal import check_buffers, with_model
from fedloom.client import LocalTraining
from fedloom.config.build import (
    build_algorithm,
    build_federated,
    build_local_training,
    build_local_work,
    build_model,
    build_task,
)
from fedloom.config.compression import check_compression
from fedloom.config.run import RunConfig
from fedloom.config.selection import build_selection
from fedloom.config.server import build_policy
from fedloom.data import FederatedDataset
from fedloom.data.sampling import cohort_size
from fedloom.data.selection import Selection
from fedloom.engine import Callback, LocalWork, UpdatePolicy
from fedloom.engine.early import BEST_MODEL_FILE, BestModel, EarlyStopping
from fedloom.errors import ConfigError
from fedloom.model_file import load_model
from fedloom.models import initial_module
from fedloom.params import load_flat, param_spec
from fedloom.privacy.dp_fedavg import calibrate
from fedloom.tasks import Task

__all__ = ["RunSpec", "build_run", "stopping_callbacks", "tracking_callbacks"]


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
        selection: which clients a round asks (``server.selection``; ``None``: uniform).
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
    selection: Selection | None = None


def build_run(config: RunConfig, *, data: FederatedDataset | None = None) -> RunSpec:
    """Build the run ``config`` describes; ``data`` reuses an already partitioned dataset."""
    data = data if data is not None else build_federated(config)
    algorithm = build_algorithm(config, data.num_clients)
    if config.server.secure_aggregation is not None:
        _check_counts_fit(config, data)
    algorithm = calibrate(  # a DP run given only its budget: the noise that spends it exactly
        algorithm,
        population=data.num_clients,
        fraction=config.server.fraction,
        rounds=config.rounds,
        sampling=config.server.sampling,
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
    algorithm = with_model(algorithm, module)  # a personal pattern that matches nothing fails here
    check_compression(algorithm.program.compression, param_spec(module).num_params)
    check_buffers(algorithm, config.model.buffers)
    if config.server.secure_aggregation is not None and config.model.buffers == "average":
        floats = sum(b.numel() for b in module.buffers() if b.is_floating_point())
        if floats:
            raise ConfigError(
                f"server.secure_aggregation: the model has {floats} float buffers (batch-norm "
                "statistics), which would be averaged in the clear; set model.buffers: local"
            )
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
        selection=build_selection(config, data.num_clients),
    )


def _check_counts_fit(config: RunConfig, data: FederatedDataset) -> None:
    """Each client's example count is one coordinate of its masked input: the cohort's
    counts must sum below ``2^bits`` (checked here, where the clients' sizes are known)."""
    section = config.server.secure_aggregation
    assert section is not None
    cohort = cohort_size(data.num_clients, config.server.fraction)
    largest = int(data.client_sizes.max()) if data.num_clients else 0
    most = ((1 << section.bits) - 1) // max(cohort, 1)
    if largest > most:
        raise ConfigError(
            f"server.secure_aggregation.bits = {section.bits} is too few for the example "
            f"counts: the largest client has {largest} examples, and {cohort} clients' counts "
            f"must sum below 2^{section.bits} (at most {most} each); raise bits"
        )


def stopping_callbacks(
    config: RunConfig, module: nn.Module, run_dir: Path | None
) -> list[Callback]:
    """The config's early stopping and best-model keeping, as callbacks (simulation and
    deployment use the same ones). The best model goes to ``run_dir/best_model.safetensors``."""
    callbacks: list[Callback] = []
    if config.early_stopping is not None:
        rule = config.early_stopping
        callbacks.append(
            EarlyStopping(
                rule.metric, patience=rule.patience, min_delta=rule.min_delta, mode=rule.mode
            )
        )
    if config.output.best_model is not None:
        path = run_dir / BEST_MODEL_FILE if run_dir is not None else None
        callbacks.append(BestModel(config.output.best_model, path=path, module=module))
    return callbacks


def tracking_callbacks(
    config: RunConfig, module: nn.Module, run_dir: Path | None
) -> list[Callback]:
    """TensorBoard and MLflow loggers for ``output.tensorboard`` and ``output.mlflow``.

    A relative TensorBoard folder is placed inside the run directory (or the working
    directory when there is none); the MLflow run is named after the run directory."""
    from fedloom.report.tracking import MLflowLogger, TensorBoardLogger

    callbacks: list[Callback] = []
    if config.output.tensorboard is not None:
        folder = Path(config.output.tensorboard)
        if not folder.is_absolute() and run_dir is not None:
            folder = run_dir / folder
        callbacks.append(TensorBoardLogger(folder))
    if config.output.mlflow is not None:
        callbacks.append(
            MLflowLogger(
                config.output.mlflow,
                experiment=config.output.mlflow_experiment,
                run_name=run_dir.name if run_dir is not None else config.name,
                params=config.model_dump(mode="json"),
                run_dir=run_dir,
                module=module,
            )
        )
    return callbacks
