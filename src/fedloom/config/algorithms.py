"""The ``algorithm`` section: every registered algorithm with its own options.

An algorithm's factory takes its own options plus ``server_lr`` and ``weighting``, which
come from the ``server`` section (their defaults are the factory's own: FedAdam's server
learning rate is 0.01, SCAFFOLD weights uniformly). A new algorithm registers with one line:

    REGISTRY.register("algorithm", "feddyn", feddyn, server_options=SERVER_OPTIONS)

and its section is made from the factory's signature (:func:`fedloom.registry.section_from_factory`).
The built-in ones below keep hand-written sections for their docstrings and bounds.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from fedloom import algorithms
from fedloom.algorithms import Algorithm
from fedloom.errors import ConfigError
from fedloom.registry import REGISTRY, Entry, Named, Section

__all__ = ["SERVER_OPTIONS", "build_algorithm_from", "register_algorithm"]

SERVER_OPTIONS = ("server_lr", "weighting")
"""Factory parameters set by the ``server`` section (``server.lr``, ``server.weighting``)."""


class FedAvgConfig(Named):
    """McMahan et al. 2017."""

    name: Literal["fedavg"] = "fedavg"


class FedSGDConfig(Named):
    """One full-batch step per client and round."""

    name: Literal["fedsgd"] = "fedsgd"


class FedProxConfig(Named):
    """Li et al. 2020: proximal term mu/2 ||w - w_t||^2."""

    name: Literal["fedprox"] = "fedprox"
    mu: Annotated[float, Field(ge=0)] = 0.01


class ScaffoldConfig(Named):
    """Karimireddy et al. 2020, option II control variates."""

    name: Literal["scaffold"] = "scaffold"


class FedNovaConfig(Named):
    """Wang et al. 2020: updates normalized by local work."""

    name: Literal["fednova"] = "fednova"


class FedAvgMConfig(Named):
    """Hsu et al. 2019: server momentum."""

    name: Literal["fedavgm"] = "fedavgm"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9


class FedAdagradConfig(Named):
    """Reddi et al. 2021."""

    name: Literal["fedadagrad"] = "fedadagrad"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    tau: Annotated[float, Field(gt=0)] = 1e-3


class FedAdamConfig(Named):
    """Reddi et al. 2021."""

    name: Literal["fedadam"] = "fedadam"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.99
    tau: Annotated[float, Field(gt=0)] = 1e-3


class FedYogiConfig(Named):
    """Reddi et al. 2021."""

    name: Literal["fedyogi"] = "fedyogi"
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.99
    tau: Annotated[float, Field(gt=0)] = 1e-3


class QFFLConfig(Named):
    """Li et al. 2020 (fair resource allocation): q-FedAvg."""

    name: Literal["qffl"] = "qffl"
    q: Annotated[float, Field(ge=0)] = 1.0
    lipschitz: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="L; default 1 / client.lr"
    )


def register_algorithm(
    name: str, factory: Callable[..., Algorithm] | str, *, section: type[Section] | None = None
) -> Entry:
    """Register an algorithm factory under ``name`` (see the module docstring); ``factory``
    may be a ``"module:function"`` path, imported now."""
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    assert callable(factory)  # for the type checker: a path resolves to the function
    return REGISTRY.register(
        "algorithm", name, factory, section=section, server_options=SERVER_OPTIONS
    )


for _name, _factory, _section in (
    ("fedavg", algorithms.fedavg, FedAvgConfig),
    ("fedsgd", algorithms.fedsgd, FedSGDConfig),
    ("fedprox", algorithms.fedprox, FedProxConfig),
    ("scaffold", algorithms.scaffold, ScaffoldConfig),
    ("fednova", algorithms.fednova, FedNovaConfig),
    ("fedavgm", algorithms.fedavgm, FedAvgMConfig),
    ("fedadagrad", algorithms.fedadagrad, FedAdagradConfig),
    ("fedadam", algorithms.fedadam, FedAdamConfig),
    ("fedyogi", algorithms.fedyogi, FedYogiConfig),
    ("qffl", algorithms.qffl, QFFLConfig),
):
    register_algorithm(_name, _factory, section=_section)
register_algorithm("feddyn", "fedloom.algorithms.feddyn:feddyn")
register_algorithm("dp_fedavg", "fedloom.privacy.dp_fedavg:dp_fedavg")
register_algorithm("fedper", "fedloom.algorithms.fedper:fedper")
register_algorithm("fedbn", "fedloom.algorithms.fedper:fedbn")
register_algorithm("ditto", "fedloom.algorithms.ditto:ditto")
register_algorithm("fedrep", "fedloom.algorithms.fedrep:fedrep")
register_algorithm("lifelong", "fedloom.algorithms.lifelong:lifelong")


def server_defaults(name: str) -> tuple[float, str]:
    """``(server lr, weighting)`` an algorithm uses when the config leaves them empty."""
    entry = REGISTRY.entry("algorithm", name)
    lr = entry.default("server_lr")
    weighting = entry.default("weighting")
    return (1.0 if lr is None else float(lr)), (weighting or "examples")


def build_algorithm_from(section: Named, *, server_lr: float, weighting: str) -> Algorithm:
    """The algorithm value of an ``algorithm`` section and the server's lr and weighting."""
    name = section.name
    entry = REGISTRY.entry("algorithm", name)
    options = section.model_dump(exclude={"name"})
    parameters = inspect.signature(entry.factory).parameters
    if "server_lr" in parameters:
        options["server_lr"] = server_lr
    elif server_lr != 1.0:
        raise ConfigError(
            f"server.lr: {name} sets its own step size (q-FFL: 1 / sum h_k); leave it 1"
        )
    if "weighting" in parameters:
        options["weighting"] = weighting
    algorithm: Algorithm = entry.factory(**options)
    return algorithm
