"""The whole run: :class:`RunConfig` and its smaller sections, YAML in and out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

import fedloom.config.engines  # noqa: F401  (registers the engines)
from fedloom.config._dispatch import dispatch, registry_field
from fedloom.config._errors import describe_errors
from fedloom.config.algorithms import FedAvgConfig, server_defaults
from fedloom.config.clock import ClockConfig, FedBuffConfig
from fedloom.config.compression import CompressionConfig
from fedloom.config.data import DataConfig
from fedloom.config.server import ServerConfig
from fedloom.errors import ConfigError
from fedloom.models import MODELS
from fedloom.registry import REGISTRY, Named, Section, section_from_factory
from fedloom.tasks import TASKS

__all__ = [
    "AttackConfig",
    "ClientConfig",
    "DeployConfig",
    "EarlyStoppingConfig",
    "EvalConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "apply_overrides",
    "load_config",
]

for _name, _model in MODELS.items():  # a model's sizes come from the data, not the config
    _section = section_from_factory("model", _name, _model, exclude=("num_classes", "num_features"))
    REGISTRY.register("model", _name, _model, section=_section)
for _name, _task in TASKS.items():
    REGISTRY.register("task", _name, _task)


class ModelConfig(Section):
    name: str = Field(
        default="auto", description="a registered model, or auto: the dataset's reference model"
    )
    buffers: Literal["average", "local"] = "average"
    init: str | None = Field(
        default=None,
        description="start from this model file (an earlier run's model.safetensors) instead "
        "of the seeded initialization; verified before use",
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        names = ("auto", *REGISTRY.names("model"))
        if value not in names:
            raise ValueError(f"unknown model {value!r}; registered: {', '.join(names)}")
        return value


class HeterogeneityConfig(Section):
    """Each sampled client's work drawn uniformly from {low..high} (epochs, or steps)."""

    low: Annotated[int, Field(ge=1)]
    high: Annotated[int, Field(ge=1)]
    redraw: Literal["round", "never"] = "round"


class StragglersConfig(Section):
    """A fraction of each cohort does 1..E-1 epochs (or steps); drop or keep their work."""

    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    policy: Literal["keep", "drop"] = "keep"


class ClientConfig(Section):
    epochs: Annotated[int, Field(ge=1)] = 3
    steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | Literal["full"] = 10
    lr: Annotated[float, Field(gt=0)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    heterogeneity: HeterogeneityConfig | None = None
    stragglers: StragglersConfig = StragglersConfig()
    compression: CompressionConfig | None = Field(
        default=None, description="compress the updates (and the broadcast); null: float32"
    )


class AttackConfig(Section):
    """Simulated malicious clients (a fixed fraction of the population)."""

    kind: Literal["none", "scaling", "sign_flip", "gaussian", "alie", "ipm", "label_flip"] = "none"
    fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    factor: float = Field(default=100.0, description="scaling: the boost")
    sigma: Annotated[float, Field(ge=0)] = Field(default=1.0, description="gaussian: noise std")
    z: float | None = Field(default=None, description="alie: z; default from the paper")
    epsilon: float = Field(default=0.5, description="ipm: the attackers send -epsilon * mean")
    omniscient: bool = Field(default=True, description="alie/ipm see the honest updates")


class EvalConfig(Section):
    every: Annotated[int, Field(ge=1)] = 1
    clients: bool = True
    train: bool = Field(default=False, description="also the global training loss")
    finetune_steps: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="also fine-tune the global model this many local steps on each client's "
        "training split and score it on its held-out split (client_finetuned_*; 0: off)",
    )


class EarlyStoppingConfig(Section):
    """Stop when a metric has not improved for ``patience`` evaluations
    (:class:`fedloom.engine.early.EarlyStopping`)."""

    metric: str = Field(description="the metric watched, e.g. test_accuracy or test_loss")
    patience: Annotated[int, Field(ge=1)] = Field(
        default=10, description="evaluations without improvement before the run stops"
    )
    min_delta: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="the smallest change that counts as an improvement"
    )
    mode: Literal["auto", "max", "min"] = Field(
        default="auto", description="max, min, or auto (min for names with loss/error)"
    )


class OutputConfig(Section):
    runs_dir: str = "runs"
    plots: bool = True
    save_model: bool = True
    best_model: str | None = Field(
        default=None,
        description="also keep best_model.safetensors, the model of the round with the best "
        "value of this metric (e.g. test_accuracy)",
    )
    tensorboard: str | None = Field(
        default=None,
        description="a folder for TensorBoard event files (relative: inside the run directory)",
    )
    mlflow: str | None = Field(
        default=None,
        description="an MLflow tracking URI (sqlite:///mlflow.db, http://host:5000) to log to",
    )
    mlflow_experiment: str = Field(default="fedloom", description="the MLflow experiment name")
    checkpoint: bool = Field(
        default=True, description="checkpoint.safetensors after every round, for --resume"
    )


class DeployConfig(Section):
    """How ``fedloom server`` serves the run to networked clients."""

    address: str = Field(default="127.0.0.1:8443", description="host:port to listen on")
    dp_noise: Literal["secret", "reproducible"] = Field(
        default="secret",
        description="DP noise from a secret the server draws at start (secret), or from the "
        "run seed alone, to reproduce a simulation (reproducible: tests and demos only)",
    )
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
    round_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="a round's deadline, from when its selected clients have joined"
    )
    phase_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="secure aggregation: the deadline of each protocol phase after the first "
        "(which includes local training and has round_timeout_s); default round_timeout_s",
    )
    join_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="how long a round waits for selected clients that never joined before its "
        "deadline starts (clients starting up)",
    )
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
    client_state: Literal["client", "server"] = Field(
        default="client",
        description="where per-client algorithm state (SCAFFOLD's c_k) lives: on each client "
        "(it never leaves it) or on the server (stateless clients)",
    )
    max_message_mb: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="gRPC message limit; default twice the model size plus 1 MB"
    )
    dashboard: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        default=None,
        description="serve the live dashboard (a web page) on this port; 0 picks a free one; "
        "off by default",
    )
    dashboard_host: str = Field(
        default="127.0.0.1", description="where the dashboard listens (loopback: tunnel to it)"
    )
    dashboard_token: str | None = Field(
        default=None,
        description="file whose first line is the dashboard's token; default a random one, "
        "printed at start",
    )


class RunConfig(Section):
    """A whole experiment. Every field has a default: ``RunConfig()`` is ``fedloom run``."""

    name: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    rounds: Annotated[int, Field(ge=1)] = 40
    engine: str = Field(
        default="auto",
        description="a registered simulation engine (fedloom.config.register_engine)",
    )
    workers: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="processes for the process engine; default one per core"
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    task: SerializeAsAny[Named] = registry_field(
        "task",
        REGISTRY.entry("task", "classification").section(),
        "what the model learns: its loss and metrics (a registered task and its options)",
    )
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    algorithm: SerializeAsAny[Named] = registry_field(
        "algorithm", FedAvgConfig(), "the algorithm (a registered one) and its options"
    )
    attack: AttackConfig = AttackConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    deploy: DeployConfig = DeployConfig()
    early_stopping: EarlyStoppingConfig | None = Field(
        default=None, description="stop on a plateau of a metric (off by default)"
    )
    clock: ClockConfig | None = Field(
        default=None,
        description="simulated time: device speeds, bandwidths, availability, a round deadline",
    )
    fedbuff: FedBuffConfig | None = Field(
        default=None,
        description="run asynchronous FedBuff on the clock instead of rounds (needs clock)",
    )

    @model_validator(mode="after")
    def _fedbuff_needs_a_clock(self) -> RunConfig:
        if self.fedbuff is not None and self.clock is None:
            raise ValueError(
                "fedbuff needs the clock section (FedBuff runs on simulated time); add "
                "clock: {} for the default device speeds"
            )
        return self

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, value: Any) -> Any:
        return dispatch("algorithm", value, default="fedavg")

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        return dispatch("task", value, default="classification")

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        names = REGISTRY.names("engine")
        if value not in names:
            raise ValueError(f"unknown engine {value!r}; registered: {', '.join(names)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _algorithm_defaults(cls, raw: Any) -> Any:
        """Fill ``server.lr`` and ``server.weighting`` with the algorithm's defaults, so the
        resolved config shows the values used."""
        if not isinstance(raw, dict):
            return raw
        algorithm = raw.get("algorithm", "fedavg")
        name = algorithm if isinstance(algorithm, str) else getattr(algorithm, "name", None)
        if isinstance(algorithm, dict):
            name = algorithm.get("name", "fedavg")
        server = raw.get("server") or {}
        if not isinstance(server, dict) or str(name) not in REGISTRY.names("algorithm"):
            return raw
        lr, weighting = server_defaults(str(name))
        server = dict(server)
        if server.get("lr") is None:
            server["lr"] = lr
        if server.get("weighting") is None:
            server["weighting"] = weighting
        return {**raw, "server": server}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Validate a plain dict; raises :class:`ConfigError` with one line per problem."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc.errors(), cls, raw)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def fingerprint(self) -> str:
        """A hash of everything that decides the run's numbers, so a checkpoint is resumed
        only by the same experiment. Left out: where outputs go, how the run is served, the
        engine (engines agree to float rounding), the failure policy (it stops a run, it
        does not change a completed round), and the number of rounds and the early-stopping
        rule, so a finished run can be extended (a round depends only on the seed and its own
        number). The defaults of ``server.sampling`` (uniform), ``data.normalize`` (auto),
        ``data.scanners`` (none), ``data.task_sequence`` (none), ``data.hf`` (none),
        ``data.emnist`` (balanced), ``data.fair_synthetic`` and ``data.adult`` (none),
        ``eval.finetune_steps`` (0), ``client.compression`` (none), ``server.selection``
        (none), ``task`` (classification), ``clock`` and ``fedbuff`` (off) are left out too,
        so runs checkpointed before those keys existed still resume."""
        ignored = {"name", "output", "deploy", "rounds", "early_stopping", "engine", "workers"}
        if self.task == type(self).model_fields["task"].default:
            ignored.add("task")
        if self.clock is None:  # off: the fingerprints of before it existed
            ignored.add("clock")
        if self.fedbuff is None:
            ignored.add("fedbuff")
        server: dict[str, bool] = {"on_client_error": True}
        if self.server.sampling == "uniform":
            server["sampling"] = True
        if self.server.secure_aggregation is None:  # off: the fingerprints of before it existed
            server["secure_aggregation"] = True
        if self.server.selection is None:  # off: the fingerprints of before it existed
            server["selection"] = True
        data: dict[str, bool] = {"normalize": True} if self.data.normalize == "auto" else {}
        if self.data.scanners is None:  # off: the fingerprints of before it existed
            data["scanners"] = True
        if self.data.task_sequence is None:  # off: the fingerprints of before it existed
            data["task_sequence"] = True
        data["verify"] = True  # always: it checks the files, it never changes the numbers
        if self.data.hf is None:  # unused: the fingerprints of before it existed
            data["hf"] = True
        if self.data.emnist.split == "balanced":  # the default: as before it existed
            data["emnist"] = True
        client: dict[str, bool] = {}
        if self.client.compression is None:  # off: the fingerprints of before it existed
            client["compression"] = True
        for section in ("fair_synthetic", "adult"):  # null: as before they existed
            if getattr(self.data, section) is None:
                data[section] = True
        evaluation: dict[str, bool] = {}
        if self.eval.finetune_steps == 0:  # an extra metric only; off: as before it existed
            evaluation["finetune_steps"] = True
        decisive = self.model_dump(
            mode="json",
            exclude={
                **dict.fromkeys(ignored, True),
                "server": server,
                **({"data": data} if data else {}),
                **({"client": client} if client else {}),
                **({"eval": evaluation} if evaluation else {}),
            },
        )
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


YAML_ERRORS = (yaml.YAMLError, ValueError, LookupError, TypeError)
"""What reading YAML text can raise: a tagged scalar that does not convert (``!!int abc``,
``!!bool maybe``, ``!!timestamp 2020-99-99``) fails with the conversion's own error."""

SHORTHAND_TAGS = {"partition": "kind", "algorithm": "name", "aggregator": "name", "task": "name"}


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides applied (values are YAML)."""
    result = _deep_copy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set rounds=10")
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):  # 'client..lr', '.rounds', 'data.'
            raise ConfigError(
                f"--set {override!r}: {key.strip()!r} has an empty part; keys are dotted "
                "names, e.g. --set client.lr=0.05"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except YAML_ERRORS as exc:  # its text spans lines: one line per problem
            raise ConfigError(
                f"--set {override!r}: value is not valid YAML ({' '.join(str(exc).split())})"
            ) from None
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in SHORTHAND_TAGS:
                child = {SHORTHAND_TAGS[part]: child}
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
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
            raise ConfigError(f"config file {path}: cannot read it ({exc})") from None
        try:
            loaded = yaml.safe_load(text)
        except YAML_ERRORS as exc:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        raw = loaded or {}
    return RunConfig.from_dict(apply_overrides(raw, overrides))
