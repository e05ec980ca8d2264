"""The ``server`` section: aggregation rules (registered), clipping, hierarchy, validation,
and the server's learning rate and weighting."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator

from fedloom import aggregate
from fedloom.client.spill import SpilledClientStates
from fedloom.client.store import ClientStates
from fedloom.config._dispatch import dispatch, registry_field
from fedloom.engine import UpdatePolicy
from fedloom.errors import ConfigError
from fedloom.registry import REGISTRY, Named, Section

__all__ = [
    "HierarchyConfig",
    "SelectionConfig",
    "SecureAggregationConfig",
    "ServerConfig",
    "ValidationConfig",
    "build_aggregator",
    "build_client_store",
    "build_policy",
    "build_rule",
    "protections",
]


class MeanRule(Named):
    """The weighted mean (FedAvg)."""

    name: Literal["mean"] = "mean"


class MedianRule(Named):
    """Coordinate-wise median (Yin et al. 2018)."""

    name: Literal["median"] = "median"


class TrimmedMeanRule(Named):
    """Coordinate-wise trimmed mean: cut floor(beta K) from each end."""

    name: Literal["trimmed_mean"] = "trimmed_mean"
    beta: Annotated[float, Field(ge=0, lt=0.5)] = 0.1


class KrumRule(Named):
    """Krum / Multi-Krum (Blanchard et al. 2017): f assumed attackers, m selected."""

    name: Literal["krum"] = "krum"
    f: Annotated[int, Field(ge=0)] = 1
    m: Annotated[int, Field(ge=1)] = 1


class BulyanRule(Named):
    """Bulyan over Krum (El Mhamdi et al. 2018): needs K >= 4f + 3."""

    name: Literal["bulyan"] = "bulyan"
    f: Annotated[int, Field(ge=0)] = 1


class GeometricMedianRule(Named):
    """Smoothed Weiszfeld geometric median (RFA, Pillutla et al. 2022)."""

    name: Literal["geometric_median"] = "geometric_median"
    nu: Annotated[float, Field(gt=0)] = 1e-6
    max_iter: Annotated[int, Field(ge=1)] = 100


class CenteredClippingRule(Named):
    """Centered clipping (Karimireddy et al. 2021) around the previous aggregate."""

    name: Literal["centered_clipping"] = "centered_clipping"
    tau: Annotated[float, Field(gt=0)] = 1.0
    iterations: Annotated[int, Field(ge=1)] = 1


for _name, _factory, _section in (
    ("mean", aggregate.Mean, MeanRule),
    ("median", aggregate.CoordinateMedian, MedianRule),
    ("trimmed_mean", aggregate.TrimmedMean, TrimmedMeanRule),
    ("krum", aggregate.Krum, KrumRule),
    ("bulyan", aggregate.Bulyan, BulyanRule),
    ("geometric_median", aggregate.GeometricMedian, GeometricMedianRule),
    ("centered_clipping", aggregate.CenteredClipping, CenteredClippingRule),
):
    REGISTRY.register("aggregator", _name, _factory, section=_section)


def _rule(value: Any) -> Any:
    return dispatch("aggregator", value, default="mean")


class HierarchyConfig(Section):
    """Clients in contiguous blocks of branching[0] under edges, edges in blocks of
    branching[1], ...; one rule per level (edges first, root last)."""

    branching: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    aggregators: list[Annotated[SerializeAsAny[Named], BeforeValidator(_rule)]] | None = Field(
        default=None,
        description="one per level, root last; default mean below the root",
        json_schema_extra={"registry": "aggregator", "default": "mean"},
    )


DEPLOYMENT_RATIO = 10.0
"""The deployment default of ``max_norm_ratio`` and ``max_examples_ratio``: well above the
spread of honest clients' update norms (measured in ``docs/RELIABILITY.md``), well below
what it takes for one client to take over a mean."""


class ValidationConfig(Section):
    """Update validation: bounds, and the fewest valid updates a round needs."""

    max_norm: Annotated[float, Field(gt=0)] | None = None
    max_examples: Annotated[int, Field(ge=1)] | None = None
    min_updates: Annotated[int, Field(ge=1)] = 1
    max_norm_ratio: Annotated[float, Field(gt=1)] | Literal["off"] | None = Field(
        default=None,
        description="reject updates whose norm exceeds this multiple of the round's median "
        f"norm; default {DEPLOYMENT_RATIO:g} in deployment, none in simulation; off: none",
    )
    max_examples_ratio: Annotated[float, Field(gt=1)] | Literal["off"] | None = Field(
        default=None,
        description="cap example counts (weights) at this multiple of the round's median "
        f"count; default {DEPLOYMENT_RATIO:g} in deployment, none in simulation; off: none",
    )


class SecAggDropoutConfig(Section):
    """Simulated dropouts: each round this fraction of the cohort (drawn from the run seed
    and the round) stops after sending its message of phase ``after``."""

    fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0
    after: Literal["advertise", "share", "masked_input"] = Field(
        default="share",
        description="advertise or share: the client is left out of the sum (its pairwise "
        "masks are reconstructed); masked_input: its input is in the sum (its self-mask is)",
    )


class SecureAggregationConfig(Section):
    """Secure aggregation (Bonawitz et al. 2017; SecAgg+ with ``neighbors``): the server
    learns only the sum of the cohort's updates; in simulation and over gRPC."""

    threshold: Annotated[int, Field(ge=2)] | None = Field(
        default=None,
        description="shares needed to reconstruct a client's secrets (t); default the least "
        "safe value, a strict majority of each client's share holders",
    )
    bits: Annotated[int, Field(ge=1, le=64)] = Field(
        default=32, description="the group is Z_(2^bits): the width of a masked coordinate"
    )
    clip_range: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="each coordinate a client sends (its weight times its update: n_k u_k "
        "with example weighting) is clipped to [-clip_range, clip_range]",
    )
    neighbors: Annotated[int, Field(ge=2)] | None = Field(
        default=None,
        description="SecAgg+: an even k, each client masks with k neighbors; null: all",
    )
    value_bits: Annotated[int, Field(ge=1, le=64)] | None = Field(
        default=None,
        description="bits per coordinate; default the finest whose cohort sum fits bits",
    )
    dropout: SecAggDropoutConfig | None = Field(
        default=None, description="simulated dropouts, to exercise the recovery path"
    )


class SelectionConfig(Section):
    """Which clients a round asks to train (see fedloom.data.selection): uniform,
    power_of_choice (the highest-loss m of d candidates, Cho et al. 2022) or availability
    (uniform among the clients available this round); a registered rule by its name."""

    name: str = Field(default="uniform", description="uniform, power_of_choice, availability")
    d: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="power_of_choice: candidates a round (>= the cohort size)"
    )
    probability: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="availability: each client's chance to be available"
    )
    probabilities: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(
        default=None, description="availability: one chance per client (instead of probability)"
    )
    options: dict[str, float] = Field(
        default_factory=dict, description="a registered rule's own options"
    )


class ServerConfig(Section):
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    sampling: Literal["uniform", "poisson"] = Field(
        default="uniform",
        description="how a round's cohort is drawn: uniform (exactly max(round(fraction x "
        "num_clients), 1) clients, without replacement) or poisson (each client joins with "
        "probability fraction, so the cohort size varies and may be 0); DP-FedAvg's "
        "accountant is told which ran",
    )
    lr: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="server learning rate; default: the algorithm's own"
    )
    weighting: Literal["examples", "uniform", "inverse_variance"] | None = Field(
        default=None, description="default: the algorithm's own (examples; SCAFFOLD uniform)"
    )
    aggregator: SerializeAsAny[Named] = registry_field(
        "aggregator", MeanRule(), "the aggregation rule (a registered aggregator)"
    )
    clip_norm: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="clip each update to this L2 norm before aggregating"
    )
    validation: ValidationConfig = ValidationConfig()
    hierarchy: HierarchyConfig | None = None
    on_client_error: Literal["skip", "abort"] = Field(
        default="skip",
        description=(
            "a client whose training raises, or whose worker process or Ray actor dies, is a "
            "failure counted in num_failures: skip (leave it out of its round and go on with "
            "the others) or abort (stop the run with an error naming the client, round and "
            "error); simulation engines only"
        ),
    )

    secure_aggregation: SecureAggregationConfig | None = Field(
        default=None,
        description="the server learns only the cohort's sum (simulation; see the README's "
        "Secure aggregation section); null: off",
    )

    selection: SelectionConfig | None = Field(
        default=None,
        description="which clients a round asks (simulation); null: uniform, as sampling says",
    )

    client_store: Literal["memory", "disk"] = Field(
        default="memory",
        description="where the server keeps per-client algorithm state (SCAFFOLD's c_k): "
        "memory, or disk (one file per client, for populations whose state does not fit in "
        "memory; in the run directory's client-state/)",
    )
    client_store_cache: Annotated[int, Field(ge=1)] = Field(
        default=1024,
        description="with client_store: disk, how many clients' state to keep in memory",
    )

    @field_validator("aggregator", mode="before")
    @classmethod
    def _aggregator(cls, value: Any) -> Any:
        return _rule(value)


def build_rule(config: Named) -> aggregate.Reducer:
    """One aggregation rule (a reducer of the pipeline) from its config section."""
    name = config.name
    rule: aggregate.Reducer = REGISTRY.entry("aggregator", name).factory(
        **config.model_dump(exclude={"name"})
    )
    return rule


def build_aggregator(config: ServerConfig, num_clients: int) -> aggregate.Reducer:
    """The pipeline's reducer: the rule, or the tree of rules (``server.clip_norm`` is a
    per-client stage in front of it, see :func:`fedloom.config.build_algorithm`)."""
    rule = build_rule(config.aggregator)
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


def build_policy(config: ServerConfig, *, deployment: bool = False) -> UpdatePolicy:
    """The update policy; ``deployment`` turns the relative checks on unless they are off."""

    def ratio(value: float | str | None) -> float | None:
        if value == "off":
            return None
        if value is None:
            return DEPLOYMENT_RATIO if deployment else None
        return float(value)

    v = config.validation
    return UpdatePolicy(
        v.max_norm,
        v.max_examples,
        v.min_updates,
        max_norm_ratio=ratio(v.max_norm_ratio),
        max_examples_ratio=ratio(v.max_examples_ratio),
    )


def protections(config: ServerConfig, policy: UpdatePolicy) -> tuple[list[str], list[str]]:
    """What a deployed server says at start: ``(the update protections that are on,
    warnings about the ones a user turned off)``."""
    on = ["every update checked for shape, dtype, finite values, counts"]
    if policy.max_norm is not None:
        on.append(f"norm <= {policy.max_norm:g}")
    if policy.max_norm_ratio is not None:
        on.append(f"norm <= {policy.max_norm_ratio:g} x the round's median")
    if policy.max_examples is not None:
        on.append(f"examples <= {policy.max_examples}")
    if policy.max_examples_ratio is not None:
        on.append(f"example counts capped at {policy.max_examples_ratio:g} x the round's median")
    if config.aggregator.name != "mean":
        on.append(f"robust aggregation ({config.aggregator.name})")
    warnings = []
    if config.validation.max_norm_ratio == "off" and policy.max_norm is None:
        warnings.append(
            "server.validation.max_norm_ratio is off and max_norm unset: one client's huge "
            "update can take over the mean"
        )
    if config.validation.max_examples_ratio == "off" and policy.max_examples is None:
        warnings.append(
            "server.validation.max_examples_ratio is off and max_examples unset: a client "
            "claiming many examples gets all the weight of the mean"
        )
    return on, warnings


def build_client_store(config: ServerConfig, folder: Path | None) -> ClientStates | None:
    """The empty client-state store ``server.client_store`` asks for (``None``: in memory).
    A disk store lives in ``folder`` (the run directory's ``client-state/``), or in a fresh
    temporary folder when the run writes no files."""
    if config.client_store == "memory":
        return None
    folder = folder if folder is not None else Path(tempfile.mkdtemp(prefix="fedloom-state-"))
    return SpilledClientStates(folder, cache_clients=config.client_store_cache)
