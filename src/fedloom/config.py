"""The run configuration: pydantic models, YAML in, resolved YAML out.

This is the only place where strings become choices: dataset, partitioner, model and
algorithm names are validated here and turned into objects by the ``build_*`` functions.
Every invalid value produces one line naming the field and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from fedloom import aggregate, algorithms
from fedloom.algorithms import Algorithm
from fedloom.client import LocalTraining
from fedloom.data import (
    Dataset,
    FederatedDataset,
    federate,
    load_digits,
    load_mnist,
    load_synthetic,
)
from fedloom.data.partitioners import IID, Dirichlet, Natural, Partitioner, QuantitySkew, Shards
from fedloom.engine import LocalWork, UpdatePolicy
from fedloom.errors import ConfigError
from fedloom.models import MODELS, logistic_regression
from fedloom.sim.attacks import Attack

__all__ = [
    "RunConfig",
    "apply_overrides",
    "build_aggregator",
    "build_algorithm",
    "build_attack",
    "build_dataset",
    "build_federated",
    "build_partitioner",
    "build_local_training",
    "build_local_work",
    "build_model",
    "build_policy",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IIDPartition(_Section):
    """Shuffle and split evenly."""

    kind: Literal["iid"] = "iid"


class ShardsPartition(_Section):
    """McMahan et al.'s pathological non-IID: label-sorted shards, S per client."""

    kind: Literal["shards"] = "shards"
    shards_per_client: Annotated[int, Field(ge=1)] = 2


class DirichletPartition(_Section):
    """Label skew: each client's label mix ~ Dir(alpha * p)."""

    kind: Literal["dirichlet"] = "dirichlet"
    alpha: Annotated[float, Field(gt=0)] = 0.5


class QuantityPartition(_Section):
    """Log-normal client sizes with a minimum, IID labels."""

    kind: Literal["quantity"] = "quantity"
    sigma: Annotated[float, Field(ge=0)] = 1.0
    min_size: Annotated[int, Field(ge=1)] = 10


class NaturalPartition(_Section):
    """One client per natural owner (e.g. a Synthetic device)."""

    kind: Literal["natural"] = "natural"


_PARTITIONS = (
    IIDPartition,
    ShardsPartition,
    DirichletPartition,
    QuantityPartition,
    NaturalPartition,
)
Partition = Annotated[
    IIDPartition | ShardsPartition | DirichletPartition | QuantityPartition | NaturalPartition,
    Field(discriminator="kind"),
]


class SyntheticConfig(_Section):
    alpha: Annotated[float, Field(ge=0)] = 1.0
    beta: Annotated[float, Field(ge=0)] = 1.0
    num_devices: Annotated[int, Field(ge=1)] = 30
    iid: bool = False


class DataConfig(_Section):
    dataset: Literal["digits", "mnist", "synthetic"] = "digits"
    root: str | None = Field(
        default=None, description="data root; default $FEDLOOM_DATA or ~/.cache/fedloom"
    )
    num_clients: Annotated[int, Field(ge=1)] | None = Field(
        default=20, description="K; leave empty with the natural partition"
    )
    partition: Partition = DirichletPartition()
    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("partition", mode="before")
    @classmethod
    def _partition_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "dirichlet", **value}  # the default partition's own keys
        return value


class ModelConfig(_Section):
    name: Literal[
        "auto", "mnist_2nn", "mnist_cnn", "logistic_regression", "digits_mlp", "digits_cnn"
    ] = "auto"
    buffers: Literal["average", "local"] = "average"


class HeterogeneityConfig(_Section):
    """Each sampled client's work drawn uniformly from {low..high} (epochs, or steps)."""

    low: Annotated[int, Field(ge=1)]
    high: Annotated[int, Field(ge=1)]
    redraw: Literal["round", "never"] = "round"


class StragglersConfig(_Section):
    """A fraction of each cohort does 1..E-1 epochs (or steps); drop or keep their work."""

    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    policy: Literal["keep", "drop"] = "keep"


class ClientConfig(_Section):
    epochs: Annotated[int, Field(ge=1)] = 3
    steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | Literal["full"] = 10
    lr: Annotated[float, Field(gt=0)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    heterogeneity: HeterogeneityConfig | None = None
    stragglers: StragglersConfig = StragglersConfig()


class MeanRule(_Section):
    """The weighted mean (FedAvg)."""

    name: Literal["mean"] = "mean"


class MedianRule(_Section):
    """Coordinate-wise median (Yin et al. 2018)."""

    name: Literal["median"] = "median"


class TrimmedMeanRule(_Section):
    """Coordinate-wise trimmed mean: cut floor(beta K) from each end."""

    name: Literal["trimmed_mean"] = "trimmed_mean"
    beta: Annotated[float, Field(ge=0, lt=0.5)] = 0.1


class KrumRule(_Section):
    """Krum / Multi-Krum (Blanchard et al. 2017): f assumed attackers, m selected."""

    name: Literal["krum"] = "krum"
    f: Annotated[int, Field(ge=0)] = 1
    m: Annotated[int, Field(ge=1)] = 1


class BulyanRule(_Section):
    """Bulyan over Krum (El Mhamdi et al. 2018): needs K >= 4f + 3."""

    name: Literal["bulyan"] = "bulyan"
    f: Annotated[int, Field(ge=0)] = 1


class GeometricMedianRule(_Section):
    """Smoothed Weiszfeld geometric median (RFA, Pillutla et al. 2022)."""

    name: Literal["geometric_median"] = "geometric_median"
    nu: Annotated[float, Field(gt=0)] = 1e-6
    max_iter: Annotated[int, Field(ge=1)] = 100


class CenteredClippingRule(_Section):
    """Centered clipping (Karimireddy et al. 2021) around the previous aggregate."""

    name: Literal["centered_clipping"] = "centered_clipping"
    tau: Annotated[float, Field(gt=0)] = 1.0
    iterations: Annotated[int, Field(ge=1)] = 1


_RULES = (
    MeanRule,
    MedianRule,
    TrimmedMeanRule,
    KrumRule,
    BulyanRule,
    GeometricMedianRule,
    CenteredClippingRule,
)
AggregatorConfig = Annotated[
    MeanRule
    | MedianRule
    | TrimmedMeanRule
    | KrumRule
    | BulyanRule
    | GeometricMedianRule
    | CenteredClippingRule,
    Field(discriminator="name"),
]


def _rule_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value:
        return {"name": "mean", **value}
    return value


class HierarchyConfig(_Section):
    """Clients in contiguous blocks of branching[0] under edges, edges in blocks of
    branching[1], ...; one rule per level (edges first, root last)."""

    branching: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    aggregators: list[AggregatorConfig] | None = Field(
        default=None, description="one per level, root last; default mean below the root"
    )

    @field_validator("aggregators", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_rule_shorthand(v) for v in value] if isinstance(value, list) else value


class ValidationConfig(_Section):
    """Update validation: bounds, and the fewest valid updates a round needs."""

    max_norm: Annotated[float, Field(gt=0)] | None = None
    max_examples: Annotated[int, Field(ge=1)] | None = None
    min_updates: Annotated[int, Field(ge=1)] = 1


class AttackConfig(_Section):
    """Simulated malicious clients (a fixed fraction of the population)."""

    kind: Literal["none", "scaling", "sign_flip", "gaussian", "alie", "ipm", "label_flip"] = "none"
    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    factor: float = Field(default=100.0, description="scaling: the boost")
    sigma: Annotated[float, Field(ge=0)] = Field(default=1.0, description="gaussian: noise std")
    z: float | None = Field(default=None, description="alie: z; default from the paper")
    epsilon: float = Field(default=0.5, description="ipm: the attackers send -epsilon * mean")
    omniscient: bool = Field(default=True, description="alie/ipm see the honest updates")


class ServerConfig(_Section):
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    lr: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="server learning rate; default: the algorithm's own"
    )
    weighting: Literal["examples", "uniform", "inverse_variance"] | None = Field(
        default=None, description="default: the algorithm's own (examples; SCAFFOLD uniform)"
    )
    aggregator: AggregatorConfig = MeanRule()
    clip_norm: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="clip each update to this L2 norm before aggregating"
    )
    validation: ValidationConfig = ValidationConfig()
    hierarchy: HierarchyConfig | None = None

    @field_validator("aggregator", mode="before")
    @classmethod
    def _aggregator_shorthand(cls, value: Any) -> Any:
        return _rule_shorthand(value)


class FedAvgConfig(_Section):
    """McMahan et al. 2017."""

    name: Literal["fedavg"] = "fedavg"


class FedSGDConfig(_Section):
    """One full-batch step per client and round."""

    name: Literal["fedsgd"] = "fedsgd"


class FedProxConfig(_Section):
    """Li et al. 2020: proximal term mu/2 ||w - w_t||^2."""

    name: Literal["fedprox"] = "fedprox"
    mu: Annotated[float, Field(ge=0)] = 0.01


class ScaffoldConfig(_Section):
    """Karimireddy et al. 2020, option II control variates."""

    name: Literal["scaffold"] = "scaffold"


class FedNovaConfig(_Section):
    """Wang et al. 2020: updates normalized by local work."""

    name: Literal["fednova"] = "fednova"


class FedAvgMConfig(_Section):
    """Hsu et al. 2019: server momentum."""

    name: Literal["fedavgm"] = "fedavgm"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class FedAdagradConfig(_Section):
    """Reddi et al. 2021."""

    name: Literal["fedadagrad"] = "fedadagrad"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    tau: Annotated[float, Field(gt=0)] = 1e-3


class FedAdamConfig(_Section):
    """Reddi et al. 2021."""

    name: Literal["fedadam"] = "fedadam"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.99
    tau: Annotated[float, Field(gt=0)] = 1e-3


class FedYogiConfig(_Section):
    """Reddi et al. 2021."""

    name: Literal["fedyogi"] = "fedyogi"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.99
    tau: Annotated[float, Field(gt=0)] = 1e-3


class QFFLConfig(_Section):
    """Li et al. 2020 (fair resource allocation): q-FedAvg."""

    name: Literal["qffl"] = "qffl"
    q: Annotated[float, Field(ge=0)] = 1.0
    lipschitz: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="L; default 1 / client.lr"
    )


_ALGORITHMS = (
    FedAvgConfig,
    FedSGDConfig,
    FedProxConfig,
    ScaffoldConfig,
    FedNovaConfig,
    FedAvgMConfig,
    FedAdagradConfig,
    FedAdamConfig,
    FedYogiConfig,
    QFFLConfig,
)
AlgorithmConfig = Annotated[
    FedAvgConfig
    | FedSGDConfig
    | FedProxConfig
    | ScaffoldConfig
    | FedNovaConfig
    | FedAvgMConfig
    | FedAdagradConfig
    | FedAdamConfig
    | FedYogiConfig
    | QFFLConfig,
    Field(discriminator="name"),
]
ALGORITHM_NAMES = tuple(cls.model_fields["name"].default for cls in _ALGORITHMS)


SERVER_LR_DEFAULTS = {"fedadagrad": 0.1, "fedadam": 0.01, "fedyogi": 0.01}


class EvalConfig(_Section):
    every: Annotated[int, Field(ge=1)] = 1
    clients: bool = True
    train: bool = Field(default=False, description="also the global training loss")


class OutputConfig(_Section):
    runs_dir: str = "runs"
    plots: bool = True
    save_model: bool = True
    checkpoint: bool = Field(
        default=True, description="checkpoint.safetensors after every round, for --resume"
    )


class DeployConfig(_Section):
    """How ``fedloom server`` serves the run to networked clients."""

    address: str = Field(default="127.0.0.1:8443", description="host:port to listen on")
    certs: str | None = Field(
        default=None, description="folder with server.pem, server.key, ca.pem (fedloom certs)"
    )
    tokens: str | None = Field(
        default=None, description="YAML file client-id: token; bearer tokens, no client certs"
    )
    insecure: bool = Field(default=False, description="plaintext, ids taken on trust: tests only")
    clients: list[str] | None = Field(
        default=None, description="client ids in population order (default client-0..K-1)"
    )
    round_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    min_fit_clients: Annotated[int, Field(ge=1)] = Field(
        default=1, description="valid updates a round needs before it is aggregated"
    )
    retries: Annotated[int, Field(ge=0)] = Field(
        default=2, description="extra deadlines to wait when too few updates arrived, then stop"
    )
    close_early: bool = Field(
        default=False, description="aggregate as soon as min_fit_clients valid updates arrived"
    )
    compress: bool = Field(default=False, description="zlib-compress tensors on the wire")
    max_message_mb: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="gRPC message limit; default twice the model size plus 1 MB"
    )


class RunConfig(_Section):
    """A whole experiment. Every field has a default: ``RunConfig()`` is ``fedloom run``."""

    name: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    rounds: Annotated[int, Field(ge=1)] = 40
    engine: Literal["auto", "sequential", "vectorized", "process", "ray"] = "auto"
    workers: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="processes for the process engine; default one per core"
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    algorithm: AlgorithmConfig = FedAvgConfig()
    attack: AttackConfig = AttackConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    deploy: DeployConfig = DeployConfig()

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" not in value:
            return {"name": "fedavg", **value}
        return value

    @model_validator(mode="before")
    @classmethod
    def _algorithm_defaults(cls, raw: Any) -> Any:
        """Fill ``server.lr`` and ``server.weighting`` with the algorithm's defaults, so the
        resolved config shows the values used."""
        if not isinstance(raw, dict):
            return raw
        algorithm = raw.get("algorithm", "fedavg")
        name = algorithm if isinstance(algorithm, str) else (algorithm or {}).get("name")
        server = raw.get("server") or {}
        if not isinstance(server, dict):
            return raw
        server = dict(server)
        if server.get("lr") is None:
            server["lr"] = SERVER_LR_DEFAULTS.get(str(name), 1.0)
        if server.get("weighting") is None:
            server["weighting"] = "uniform" if name == "scaffold" else "examples"
        return {**raw, "server": server}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Validate a plain dict; raises :class:`ConfigError` with one line per problem."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_describe_all(exc.errors())) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def fingerprint(self) -> str:
        """A hash of everything that decides the run's numbers, so a checkpoint is resumed
        only by the same experiment. Left out: where outputs go, how the run is served, the
        engine (engines agree to float rounding), and the number of rounds, so a finished
        run can be extended (a round depends only on the seed and its own number)."""
        decisive = self.model_dump(
            mode="json", exclude={"name", "output", "deploy", "rounds", "engine", "workers"}
        )
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


def _section_at(path: Iterable[Any]) -> type[BaseModel] | None:
    """The config section class at a validation error's location, if there is one."""
    variants: dict[Any, type[BaseModel]] = {
        cls.model_fields["kind"].default: cls for cls in _PARTITIONS
    }
    variants.update({cls.model_fields["name"].default: cls for cls in _ALGORITHMS})
    variants.update({cls.model_fields["name"].default: cls for cls in _RULES})
    model: type[BaseModel] | None = RunConfig
    for part in path:
        if model is not None and part in model.model_fields:
            annotation = model.model_fields[part].annotation
            is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation if is_section else None  # type: ignore[assignment]
        else:
            model = variants.get(part)  # a tagged-union location names the variant
            if model is None:
                return None
    return model


def _describe_all(errors: Sequence[Any]) -> list[str]:
    """One line per field: the alternatives of a union (``int | "full"``) become one line."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        where, message = _describe(error)
        lines.setdefault(where, []).append(message)
    return [f"{where}: {'; or '.join(messages)}" for where, messages in lines.items()]


def _describe(error: Any) -> tuple[str, str]:
    # Union members add locations such as 'constrained-int' or "literal['full']": not fields.
    loc = tuple(p for p in error["loc"] if isinstance(p, int) or str(p).isidentifier())
    where = ".".join(str(p) for p in loc) or "config"
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        allowed = ", ".join(section.model_fields) if section else "see `fedloom run --help`"
        return where, f"unknown key; allowed keys here: {allowed}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return where, error["msg"]
    return where, f"{error['msg']} (got {error.get('input')!r})"


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied (values are YAML)."""
    result = _deep_copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set rounds=10")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {override!r}: value is not valid YAML ({exc})") from None
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("partition", "algorithm", "aggregator"):
                child = {"kind" if part == "partition" else "name": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML config (or start from the defaults), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        raw = loaded or {}
    return RunConfig.from_dict(apply_overrides(raw, overrides))


# ---- strings become objects -------------------------------------------------------------


def build_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """Load the configured dataset."""
    if config.dataset == "digits":
        return load_digits()
    if config.dataset == "mnist":
        return load_mnist(config.root)
    synthetic = config.synthetic
    return load_synthetic(
        synthetic.alpha,
        synthetic.beta,
        num_devices=synthetic.num_devices,
        iid=synthetic.iid,
        seed=seed,
    )


def build_partitioner(config: DataConfig) -> Partitioner:
    """The partitioner value the ``data.partition`` section describes."""
    spec, num_clients = config.partition, config.num_clients
    if isinstance(spec, NaturalPartition):
        return Natural()
    if num_clients is None:
        raise ConfigError(f"data.num_clients: required for the {spec.kind!r} partition")
    if isinstance(spec, IIDPartition):
        return IID(num_clients)
    if isinstance(spec, ShardsPartition):
        return Shards(num_clients, spec.shards_per_client)
    if isinstance(spec, DirichletPartition):
        return Dirichlet(num_clients, spec.alpha)
    return QuantitySkew(num_clients, spec.sigma, spec.min_size)


def build_federated(config: RunConfig, dataset: Dataset | None = None) -> FederatedDataset:
    """Load (unless given) and partition the configured dataset."""
    dataset = dataset if dataset is not None else build_dataset(config.data, seed=config.seed)
    partitioner = build_partitioner(config.data)
    if isinstance(partitioner, Natural) and dataset.train_owner is not None:
        natural_clients = len(np.unique(dataset.train_owner))
        if config.data.num_clients not in (None, natural_clients):
            raise ConfigError(
                f"data.num_clients: {dataset.name} has {natural_clients} natural clients, got "
                f"{config.data.num_clients}; leave num_clients empty (null) with the natural "
                "partition"
            )
    return federate(
        dataset,
        partitioner,
        holdout_fraction=config.data.holdout_fraction,
        seed=config.seed,
    )


NUM_CLASSES = {"digits": 10, "mnist": 10, "synthetic": 10}
"""Labels per dataset, for clients that bring their own data (the model's output size)."""


def build_model(config: RunConfig, dataset: Dataset) -> Callable[[], nn.Module]:
    """The model factory; ``auto`` picks the reference model of the dataset."""
    name: str = config.model.name
    if name == "auto":
        name = {"digits": "digits_cnn", "mnist": "mnist_2nn"}.get(
            config.data.dataset, "logistic_regression"
        )
    if name == "logistic_regression":
        num_features = int(np.prod(dataset.input_shape))
        return lambda: logistic_regression(num_features, dataset.num_classes)
    factory = MODELS[name]
    return lambda: factory(dataset.num_classes)


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


def build_rule(config: Any) -> aggregate.Mean | aggregate.Stacked:
    """One aggregation rule (a reducer of the pipeline) from its config section."""
    if isinstance(config, MedianRule):
        return aggregate.CoordinateMedian()
    if isinstance(config, TrimmedMeanRule):
        return aggregate.TrimmedMean(config.beta)
    if isinstance(config, KrumRule):
        return aggregate.Krum(config.f, config.m)
    if isinstance(config, BulyanRule):
        return aggregate.Bulyan(config.f)
    if isinstance(config, GeometricMedianRule):
        return aggregate.GeometricMedian(nu=config.nu, max_iter=config.max_iter)
    if isinstance(config, CenteredClippingRule):
        return aggregate.CenteredClipping(config.tau, config.iterations)
    return aggregate.Mean()


def build_aggregator(config: ServerConfig, num_clients: int) -> aggregate.Reducer:
    """The pipeline's reducer: the rule, or the tree of rules (``server.clip_norm`` is a
    per-client stage in front of it, see :func:`build_algorithm`)."""
    rule: aggregate.Reducer = build_rule(config.aggregator)
    if config.hierarchy is not None:
        depth = len(config.hierarchy.branching) + 1
        if config.hierarchy.aggregators is None:
            rules: list[Any] = [aggregate.Mean()] * (depth - 1) + [rule]
        else:
            if len(config.hierarchy.aggregators) != depth:
                raise ConfigError(
                    f"server.hierarchy.aggregators: {len(config.hierarchy.branching)} branching "
                    f"levels need {depth} rules (edges first, root last), got "
                    f"{len(config.hierarchy.aggregators)}"
                )
            rules = [build_rule(r) for r in config.hierarchy.aggregators]
        tree = aggregate.contiguous_tree(num_clients, config.hierarchy.branching, rules)
        rule = aggregate.Hierarchical(tree)
    return rule


def build_policy(config: ServerConfig) -> UpdatePolicy:
    v = config.validation
    return UpdatePolicy(v.max_norm, v.max_examples, v.min_updates)


def build_attack(config: AttackConfig) -> Attack:
    return Attack(**config.model_dump())


def build_algorithm(config: RunConfig, num_clients: int | None = None) -> Algorithm:
    """The algorithm value of the ``algorithm`` and ``server`` sections: the algorithm's own
    pipeline, with ``server.clip_norm`` appended to its per-client stages and the reducer from
    ``server.aggregator`` / ``server.hierarchy``."""
    algorithm = _build_algorithm(config)
    server = config.server
    if server.clip_norm is not None:
        per_client = (*algorithm.aggregation.per_client, aggregate.clip(server.clip_norm))
        algorithm = algorithm.with_aggregation(per_client=per_client)
    if server.hierarchy is None and server.aggregator.name == "mean":
        return algorithm
    if server.hierarchy is not None and num_clients is None:
        raise ConfigError("server.hierarchy: the number of clients is needed to build the tree")
    return algorithm.with_aggregator(build_aggregator(server, num_clients or 0))


def _build_algorithm(config: RunConfig) -> Algorithm:
    spec, server = config.algorithm, config.server
    lr = server.lr if server.lr is not None else SERVER_LR_DEFAULTS.get(spec.name, 1.0)
    weighting = server.weighting or ("uniform" if spec.name == "scaffold" else "examples")
    if isinstance(spec, FedProxConfig):
        return algorithms.fedprox(spec.mu, server_lr=lr, weighting=weighting)
    if isinstance(spec, FedAvgMConfig):
        return algorithms.fedavgm(server_lr=lr, momentum=spec.momentum, weighting=weighting)
    if isinstance(spec, FedAdagradConfig):
        return algorithms.fedadagrad(
            server_lr=lr, beta1=spec.beta1, tau=spec.tau, weighting=weighting
        )
    if isinstance(spec, FedAdamConfig | FedYogiConfig):
        factory = algorithms.fedadam if isinstance(spec, FedAdamConfig) else algorithms.fedyogi
        return factory(
            server_lr=lr, beta1=spec.beta1, beta2=spec.beta2, tau=spec.tau, weighting=weighting
        )
    if isinstance(spec, QFFLConfig):
        if lr != 1.0:
            raise ConfigError("server.lr: q-FFL sets its own step size (1 / sum h_k); leave it 1")
        return algorithms.qffl(spec.q, lipschitz=spec.lipschitz, weighting=weighting)
    plain = {
        "fedavg": algorithms.fedavg,
        "fedsgd": algorithms.fedsgd,
        "scaffold": algorithms.scaffold,
        "fednova": algorithms.fednova,
    }
    return plain[spec.name](server_lr=lr, weighting=weighting)
