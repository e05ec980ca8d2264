"""Strings become objects: the values a :class:`RunConfig` describes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fedloom import aggregate
from fedloom.aggregate import clip
from fedloom.algorithms import Algorithm
from fedloom.algorithms.personal import with_personal
from fedloom.client import LocalTraining
from fedloom.config.algorithms import build_algorithm_from
from fedloom.config.compression import build_compression
from fedloom.config.data import build_federated_data
from fedloom.config.run import AttackConfig, ClientConfig, RunConfig
from fedloom.config.server import build_aggregator
from fedloom.data import Dataset, FederatedDataset
from fedloom.data.sampling import cohort_size
from fedloom.engine import LocalWork
from fedloom.errors import ConfigError
from fedloom.registry import REGISTRY
from fedloom.tasks import Task, balanced_weights

if TYPE_CHECKING:
    from fedloom.sim.attacks import Attack

__all__ = [
    "NUM_CLASSES",
    "build_algorithm",
    "build_attack",
    "build_federated",
    "build_local_training",
    "build_local_work",
    "build_model",
    "build_task",
]

NUM_CLASSES = {
    "digits": 10,
    "mnist": 10,
    "synthetic": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "femnist": 62,
    "shakespeare": 80,
    "fair_synthetic": 2,
    "adult": 2,
}
"""Labels per dataset, for clients that bring their own data (the model's output size)."""

REFERENCE_MODELS = {
    "digits": "digits_cnn",
    "mnist": "mnist_2nn",
    "fashion_mnist": "mnist_cnn",
    "emnist": "mnist_cnn",
    "femnist": "mnist_cnn",
    "cifar10": "cifar_resnet",
    "shakespeare": "shakespeare_lstm",
}
"""What ``model.name: auto`` means for each dataset (logistic regression otherwise)."""


def build_federated(config: RunConfig, dataset: Dataset | None = None) -> FederatedDataset:
    """Load (unless given) and partition the configured dataset."""
    return build_federated_data(config.data, seed=config.seed, dataset=dataset)


def build_model(config: RunConfig, dataset: Dataset) -> Callable[[], nn.Module]:
    """The model factory; ``auto`` picks the reference model of the dataset.

    The model is checked against the data here, once, by running one training example
    through a throwaway instance: a model built for other inputs (``mnist_cnn`` on 8x8
    digits) would otherwise fail deep inside the engine with a matrix-shape error, after the
    run directory exists. The error names ``model.name``, the data's input shape and the
    registered models that do fit.
    """
    name: str = config.model.name
    if config.task.name == "adversarial_fairness":
        return _adversarial_model(config, dataset)
    if config.task.name == "mixture_of_experts":
        return _moe_model(config, dataset)
    if config.task.name == "gan":
        return _gan_model(config, dataset)
    if name == "auto":
        name = REFERENCE_MODELS.get(config.data.dataset, "logistic_regression")
    model = _model_factory(name, dataset)
    problem = _misfit(model, dataset)
    if problem is not None:
        fitting = [
            other
            for other in REGISTRY.names("model")
            if other != name and _misfit(_model_factory(other, dataset), dataset) is None
        ]
        raise ConfigError(
            f"model.name: {name} does not fit the {dataset.name} data, whose examples have "
            f"input shape {tuple(dataset.input_shape)} and {dataset.num_classes} classes "
            f"({problem}); models that fit: {', '.join(fitting) or 'none registered'}"
        )
    return model


def _adversarial_model(config: RunConfig, dataset: Dataset) -> Callable[[], nn.Module]:
    """The predictor-and-adversary model the ``task`` section of adversarial fairness
    describes (its options say the widths and where the adversary reads)."""
    from functools import partial

    from fedloom.tasks.adversarial import AdversarialFairness

    if config.model.name != "auto":
        raise ConfigError(
            f"model.name: {config.model.name} cannot be trained against an adversary; with "
            "task adversarial_fairness leave model.name auto (the task's options build the "
            "predictor and the adversary: hidden, adversary_hidden, reads)"
        )
    setup = AdversarialFairness(**config.task.model_dump(exclude={"name"}))
    return partial(setup.model, int(np.prod(dataset.input_shape)), dataset.num_classes)


def _moe_setup(config: RunConfig) -> Any:
    """The :class:`~fedloom.tasks.moe.MixtureOfExperts` of the ``task`` section."""
    from fedloom.tasks.moe import MixtureOfExperts

    return MixtureOfExperts(**config.task.model_dump(exclude={"name"}))


def _moe_model(config: RunConfig, dataset: Dataset) -> Callable[[], nn.Module]:
    """The experts-and-gate model the ``task`` section of a mixture of experts describes."""
    from functools import partial

    if config.model.name != "auto":
        raise ConfigError(
            f"model.name: {config.model.name} is not a mixture of experts; with task "
            "mixture_of_experts leave model.name auto (the task's options build the experts "
            "and the gate: num_experts, expert_hidden, gate_hidden)"
        )
    setup = _moe_setup(config)
    return partial(setup.model, int(np.prod(dataset.input_shape)), dataset.num_classes)


def _gan_model(config: RunConfig, dataset: Dataset) -> Callable[[], nn.Module]:
    """The generator-and-discriminator model the ``task`` section of a GAN describes."""
    from functools import partial

    from fedloom.tasks.gan import Gan

    if config.model.name != "auto":
        raise ConfigError(
            f"model.name: {config.model.name} is not a generator and discriminator; with "
            "task gan leave model.name auto (the task's options build both: latent, hidden, "
            "disc_hidden, mode)"
        )
    setup = Gan(**config.task.model_dump(exclude={"name"}))
    return partial(setup.model, int(np.prod(dataset.input_shape)))


def _model_factory(name: str, dataset: Dataset) -> Callable[[], nn.Module]:
    factory = REGISTRY.entry("model", name).factory
    if "num_features" in inspect.signature(factory).parameters:
        num_features = int(np.prod(dataset.input_shape))
        return lambda: factory(num_features, dataset.num_classes)
    return lambda: factory(dataset.num_classes)


def _misfit(model: Callable[[], nn.Module], dataset: Dataset) -> str | None:
    """Why the model cannot take the data's examples, or ``None`` when it can.

    One example goes through a fresh instance in eval mode, under a forked RNG: building
    the instance draws random weights, and the global torch RNG must be left as it was
    (the run's initial weights come from their own seed, see :func:`initial_module`).
    """
    example = dataset.train_x[:1]
    if len(example) == 0:
        example = torch.zeros((1, *dataset.input_shape), dtype=dataset.train_x.dtype)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        module = model().eval()
        try:
            output = module(example)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            return " ".join(str(exc).split())
    expected = (1, dataset.num_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        return f"it gives outputs of shape {got} for one example, expected {expected}"
    return None


def build_task(config: RunConfig, data: FederatedDataset | Dataset) -> Task:
    """The task the ``task`` section names, its options checked against the data: a class
    weight per class, class labels (``class_metrics``, ``positive_class``) that exist. A bad
    option is a :class:`ConfigError` naming ``task.<option>``.

    ``class_weights: balanced`` becomes ``n / (C n_c)`` over the clients' training splits
    (:func:`fedloom.tasks.balanced_weights`), so it needs the federation (``data``), the same
    for the server and every demo client of a deployment."""
    section = config.task
    options = section.model_dump(exclude={"name"})
    dataset = data.dataset if isinstance(data, FederatedDataset) else data
    classes = dataset.num_classes
    weights = options.get("class_weights")
    if weights == "balanced":
        if not isinstance(data, FederatedDataset):
            raise ConfigError(
                "task.class_weights: balanced weights come from the federation's training "
                "data, which a client with its own data does not have; give the weights"
            )
        try:
            options["class_weights"] = weights = balanced_weights(data.label_histograms().sum(0))
        except ValueError as exc:
            raise ConfigError(f"task.class_weights: {exc}") from None
    if weights is not None and len(weights) != classes:
        raise ConfigError(
            f"task.class_weights: {len(weights)} weights for the {classes} classes of "
            f"{dataset.name}; give one weight per class"
        )
    for option in ("class_metrics", "positive_class"):
        value = options.get(option)
        labels = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
        wrong = [label for label in labels if not 0 <= int(label) < classes]
        if wrong:
            raise ConfigError(
                f"task.{option}: label(s) {wrong} do not exist; {dataset.name} has labels "
                f"0..{classes - 1}"
            )
    if section.name == "adversarial_fairness":
        _check_sensitive(options, dataset)
    try:
        task: Task = REGISTRY.entry("task", section.name).factory(**options)
    except ValueError as exc:  # the factory's own checks (a user-registered task's too)
        message = str(exc).splitlines()[0]
        named = next((o for o in options if message.startswith(o)), None)
        raise ConfigError(f"task.{named or section.name}: {message}") from None
    return task


_NO_MASKED_CODE = {
    "compress/topk": "client.compression.kind topk sends each client's own k coordinates; "
    "pairwise masks cancel only in a sum over the same coordinates, so a sparse code cannot "
    "be masked (masking the dense vector sends every coordinate again); turn one of them off",
    "compress/int": "client.compression.kind int8 gives every client its own scale, and "
    "masked integers of different scales have no meaningful sum; secure aggregation already "
    "quantizes before masking, onto one grid every client shares: lower "
    "server.secure_aggregation.bits (and value_bits) to send fewer bytes",
    "compress/qsgd": "client.compression.kind qsgd gives every client its own norm, and "
    "masked levels of different norms have no meaningful sum; secure aggregation already "
    "quantizes (stochastically, unbiased) before masking, onto one grid every client shares: "
    "lower server.secure_aggregation.bits (and value_bits) to send fewer bytes",
    "compress/fp16": "client.compression.kind fp16 is a float format, which has no exact sum "
    "in the masking group; a masked coordinate takes server.secure_aggregation.bits bits "
    "whatever the client's format: lower bits (and value_bits) instead",
    "compress/bf16": "client.compression.kind bf16 is a float format, which has no exact sum "
    "in the masking group; a masked coordinate takes server.secure_aggregation.bits bits "
    "whatever the client's format: lower bits (and value_bits) instead",
}
"""Why each upload compressor cannot go under secure aggregation's masks (the broadcast's
compression, ``client.compression.download``, composes: it is public)."""


def _check_sensitive(options: dict[str, object], dataset: Dataset) -> None:
    """The sensitive attribute must be a batch entry of the data, with group ids below
    ``num_groups``; else a :class:`ConfigError` naming ``task.sensitive`` / ``task.num_groups``."""
    name = str(options["sensitive"])
    if name not in dataset.train_extra:
        held = sorted(dataset.train_extra) or "none"
        raise ConfigError(
            f"task.sensitive: {dataset.name} has no entry {name!r} (its extra entries: "
            f"{held}); name the entry that holds each example's group (fair_synthetic and "
            "adult call it s)"
        )
    groups = int(dataset.train_extra[name].max()) + 1 if dataset.num_train else 0
    if groups > int(str(options["num_groups"])):
        raise ConfigError(
            f"task.num_groups: {options['num_groups']} groups, but {dataset.name}'s {name!r} "
            f"holds group ids up to {groups - 1}; set num_groups to {groups}"
        )


def _with_secure_aggregation(
    config: RunConfig, algorithm: Algorithm, num_clients: int | None
) -> Algorithm:
    """The algorithm with its mean (or sum) replaced by the secure sum, after checking that
    nothing in the run needs to see one client's update (the server sees only the sum)."""
    server, section = config.server, config.server.secure_aggregation
    assert section is not None
    field = "server.secure_aggregation"
    problems = []
    if server.aggregator.name != "mean" or server.hierarchy is not None:
        what = "server.hierarchy" if server.hierarchy is not None else "server.aggregator"
        rule = "a hierarchy" if server.hierarchy is not None else server.aggregator.name
        problems.append(
            f"{field}: {what} ({rule}) needs each client's update, and the server sees only "
            "their sum; use the mean"
        )
    pipeline = algorithm.aggregation
    if type(pipeline.reduce) not in (aggregate.Mean, aggregate.Sum):
        problems.append(
            f"{field}: {algorithm.name} reduces with {pipeline.reduce.name}, which needs each "
            "client's update; only the mean and the sum can be computed securely"
        )
    if algorithm.state is not None:
        problems.append(
            f"{field}: {algorithm.name} keeps per-client state built from each client's "
            "update (its control variates), which the server cannot see under secure "
            "aggregation"
        )
    if server.weighting not in ("examples", "uniform"):
        problems.append(
            f"{field}: server.weighting {server.weighting} gives fractional weights; secure "
            "aggregation sums whole weights (examples or uniform)"
        )
    others = [s.name for s in pipeline.per_client if not isinstance(s, aggregate.Clip)]
    if others:
        problems.append(
            f"{field}: the per-client stages {', '.join(others)} of {algorithm.name} report "
            "numbers about each client to the server; only clipping (which a client does "
            "before masking) works with secure aggregation"
        )
    upload = algorithm.program.compression.upload if algorithm.program.compression else None
    if upload is not None:
        problems.append(f"{field}: {_NO_MASKED_CODE[upload.name]}")
    if server.sampling == "poisson":
        problems.append(
            f"{field}: server.sampling poisson gives cohorts of varying size (even empty), "
            "while the protocol's threshold is set for a fixed cohort; use uniform sampling"
        )
    v = server.validation
    checks = {
        "max_norm": v.max_norm,
        "max_examples": v.max_examples,
        "max_norm_ratio": v.max_norm_ratio if v.max_norm_ratio != "off" else None,
        "max_examples_ratio": v.max_examples_ratio if v.max_examples_ratio != "off" else None,
    }
    for name, value in checks.items():
        if value is not None:
            problems.append(
                f"{field}: server.validation.{name} checks each client's update, which the "
                "server cannot see under secure aggregation; remove it (clip on the clients "
                "with server.clip_norm instead)"
            )
    if problems:
        raise ConfigError(problems)
    from fedloom.privacy.secagg import SecAggConfig  # loads cryptography: only when asked for
    from fedloom.privacy.secagg.stage import SecureSum

    settings = SecAggConfig(
        threshold=section.threshold,
        bits=section.bits,
        clip_range=section.clip_range,
        neighbors=section.neighbors,
        value_bits=section.value_bits,
    )
    if num_clients is not None:
        cohort = cohort_size(num_clients, server.fraction)
        try:
            settings.for_cohort(cohort)
        except ConfigError as exc:
            message = str(exc)
            if not message.startswith("secure_aggregation."):
                message = f"secure_aggregation: {message}"
            raise ConfigError(
                f"server.{message} (a round samples {cohort} clients: server.fraction "
                f"{server.fraction:g} x data.num_clients {num_clients})"
            ) from None
    dropout = section.dropout
    reducer = SecureSum(
        settings,
        mean=isinstance(pipeline.reduce, aggregate.Mean),
        dropout_fraction=dropout.fraction if dropout is not None else 0.0,
        dropout_after=dropout.after if dropout is not None else "share",
    )
    return algorithm.with_aggregator(reducer)


def build_local_training(config: ClientConfig) -> LocalTraining:
    return LocalTraining(
        epochs=config.epochs,
        steps=config.steps,
        batch_size=None if config.batch_size == "full" else config.batch_size,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def build_local_work(config: ClientConfig) -> LocalWork:
    """Heterogeneous local work and stragglers from the ``client`` section."""
    spread = config.heterogeneity
    if spread is not None and spread.low > spread.high:
        raise ConfigError(
            f"client.heterogeneity: low ({spread.low}) must not exceed high ({spread.high})"
        )
    return LocalWork(
        low=spread.low if spread else None,
        high=spread.high if spread else None,
        straggler_fraction=config.stragglers.fraction,
        drop_stragglers=config.stragglers.policy == "drop",
        redraw=spread.redraw if spread else "round",
    )


def build_attack(config: AttackConfig) -> Attack:
    """The simulated attack (simulation only: deployment never imports it)."""
    from fedloom.sim.attacks import Attack

    return Attack(**config.model_dump())


def build_algorithm(config: RunConfig, num_clients: int | None = None) -> Algorithm:
    """The algorithm value of the ``algorithm`` and ``server`` sections: the algorithm's own
    pipeline, with ``server.clip_norm`` appended to its per-client stages and the reducer from
    ``server.aggregator`` / ``server.hierarchy``."""
    server = config.server
    if server.lr is None or server.weighting is None:  # filled when the config was validated
        raise ConfigError("server.lr and server.weighting must be resolved; use RunConfig")
    algorithm = build_algorithm_from(
        config.algorithm, server_lr=server.lr, weighting=server.weighting
    )
    if config.task.name == "mixture_of_experts":  # a personal gate stays on each client
        patterns = _moe_setup(config).personal_patterns
        algorithm = with_personal(algorithm, patterns, field="task.gate")
    compression = build_compression(config.client.compression)
    if compression is not None:
        algorithm = algorithm.with_compression(compression)
    if server.clip_norm is not None:
        per_client = (*algorithm.aggregation.per_client, clip(server.clip_norm))
        algorithm = algorithm.with_aggregation(per_client=per_client)
    if algorithm.aggregation.every_round and server.validation.min_updates > 1:
        raise ConfigError(
            f"server.validation.min_updates: {algorithm.name} releases its aggregate every "
            "round, whatever arrived (DP-FedAvg adds its noise to the sum of none); skipping "
            f"rounds with fewer than {server.validation.min_updates} updates would depend on "
            "who took part, which its accountant does not cover; leave it 1"
        )
    if server.secure_aggregation is not None:
        return _with_secure_aggregation(config, algorithm, num_clients)
    if server.hierarchy is None and server.aggregator.name == "mean":
        return algorithm
    if server.hierarchy is not None and num_clients is None:
        raise ConfigError("server.hierarchy: the number of clients is needed to build the tree")
    try:
        algorithm = algorithm.with_aggregator(build_aggregator(server, num_clients or 0))
    except ValueError as exc:  # a tree that does not fit the population, and the like
        where = "server.hierarchy" if server.hierarchy is not None else "server.aggregator"
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None
    if num_clients is not None:
        cohort = cohort_size(num_clients, server.fraction)
        if algorithm.min_updates() > cohort:
            raise ConfigError(
                f"server.aggregator: {server.aggregator.name} needs at least "
                f"{algorithm.min_updates()} updates a round, but a round samples {cohort} "
                f"clients (server.fraction {server.fraction:g} x data.num_clients "
                f"{num_clients}); lower its f or sample more clients"
            )
    return algorithm
