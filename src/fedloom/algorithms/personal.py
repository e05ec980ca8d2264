"""Personal parameters: coordinates of the model that each client keeps for itself.

FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers") keeps the
last layers personal; FedBN (Li et al. 2021, "FedBN: Federated Learning on Non-IID Features
via Local Batch Normalization") keeps every normalization layer personal. Both are the same
mechanism:

- an algorithm names its personal parameters with a :class:`Personal` value (``fnmatch``
  patterns over parameter names, and/or every normalization layer's parameters), resolved
  against the model into a boolean mask over the flat parameter vector
  (:func:`personal_mask`, :func:`with_model`);
- each client starts local training from the global model with its personal coordinates
  replaced by its own stored values (:attr:`fedloom.types.ClientPlan.start`); a client that
  never trained starts from the global ones, which never change (the initial model's);
- after training, the client's personal values (``global + update`` on the mask) are kept in
  the client-state store under :data:`PERSONAL_VALUES`, and the personal coordinates of every
  update are zeroed before aggregation, so the server's step leaves them untouched.

Updates keep the convention ``update = final - global``, so validation and the aggregation
stages see the same kind of vector as for any other algorithm.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from fedloom.errors import ConfigError
from fedloom.params import param_spec

if TYPE_CHECKING:
    from fedloom.algorithms.base import Algorithm, ServerState

__all__ = [
    "NORM_LAYERS",
    "PERSONAL_MODEL",
    "PERSONAL_VALUES",
    "Personal",
    "PersonalModel",
    "check_buffers",
    "personal_mask",
    "personalized_models",
    "personalized_params",
    "with_model",
    "with_personal",
]

PERSONAL_VALUES = "personal/values"
"""The client-state store entry holding a client's personal coordinates (``mask.sum()``
values, in flat-vector order)."""

PERSONAL_MODEL = "personal/model"
"""The client-state store entry holding a client's whole personal model (Ditto's ``v_k``, a
full flat parameter vector)."""

NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)
"""The module types whose parameters ``norm_layers=True`` makes personal."""


@dataclass(frozen=True)
class Personal:
    """Which parameters each client keeps for itself.

    Attributes:
        patterns: ``fnmatch`` patterns over parameter names (``"fc2.*"``); every pattern must
            match at least one parameter.
        norm_layers: also every parameter of a BatchNorm, GroupNorm, LayerNorm or
            InstanceNorm submodule (FedBN).
        head_epochs, head_steps: FedRep's head phase (at most one of them): each client
            first trains the personal coordinates alone for this much local work, then the
            shared ones alone for the usual local work
            (:mod:`fedloom.client.alternation`); ``None`` for both: every coordinate trains
            together (FedPer, FedBN).
        field: the config field named in errors.
        mask: the resolved boolean mask over the flat parameter vector (set by
            :func:`with_model`; ``None`` before).
    """

    patterns: tuple[str, ...] = ()
    norm_layers: bool = False
    field: str = "algorithm.personal"
    mask: torch.Tensor | None = dataclasses.field(default=None, compare=False, repr=False)
    head_epochs: int | None = None
    head_steps: int | None = None

    def __post_init__(self) -> None:
        if self.head_epochs is not None and self.head_steps is not None:
            raise ConfigError(
                "algorithm: give at most one of head_epochs and head_steps "
                f"(got {self.head_epochs} and {self.head_steps})"
            )
        for name, value in (("head_epochs", self.head_epochs), ("head_steps", self.head_steps)):
            if value is not None and value < 1:
                raise ConfigError(f"algorithm.{name}: must be >= 1, got {value}")
        if isinstance(self.patterns, str):
            raise ConfigError(
                f"{self.field}: give a list of patterns, got the string {self.patterns!r}"
            )
        if not self.patterns and not self.norm_layers:
            raise ConfigError(
                f"{self.field}: no parameter is personal; give at least one pattern "
                "(e.g. the last layer, 'fc2.*')"
            )

    @property
    def alternates(self) -> bool:
        """Whether clients train the head first, then the body (FedRep)."""
        return self.head_epochs is not None or self.head_steps is not None

    def resolved(self) -> torch.Tensor:
        """The mask; raises when the algorithm was not resolved against a model."""
        if self.mask is None:
            raise ValueError(
                f"{self.field}: the personal parameters were not resolved against the model; "
                "call fedloom.algorithms.personal.with_model(algorithm, module) first"
            )
        return self.mask


@dataclass(frozen=True)
class PersonalModel:
    """A whole personal model per client, linked to the global one (Ditto, Li et al. 2021).

    Every round each sampled client trains the global model as FedAvg does (the update the
    server aggregates) and, separately, takes its personal model ``v_k`` (from the
    client-state store under :data:`PERSONAL_MODEL`; a client without one starts it from the
    received ``w_t``) ``steps`` local steps (or ``epochs`` passes) on the objective
    ``F_k(v) + lam / 2 * ||v - w_t||^2``. ``v_k`` never reaches the server's aggregate.

    Attributes:
        lam: the proximal coefficient lambda (>= 0; 0 is independent local training).
        steps, epochs: the personal pass's local work (exactly one of them).
        field: the config field named in errors.
    """

    lam: float
    steps: int | None = None
    epochs: int | None = None
    field: str = "algorithm"

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ConfigError(f"{self.field}.lam: must be >= 0, got {self.lam}")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(
                f"{self.field}: give exactly one of personal_steps and personal_epochs "
                f"(got {self.steps} and {self.epochs})"
            )
        for name, value in (("personal_steps", self.steps), ("personal_epochs", self.epochs)):
            if value is not None and value < 1:
                raise ConfigError(f"{self.field}.{name}: must be >= 1, got {value}")


def personal_mask(personal: Personal, module: nn.Module) -> torch.Tensor:
    """The boolean ``[P]`` mask of ``module``'s personal coordinates.

    Raises :class:`~fedloom.errors.ConfigError` naming the field for a pattern that matches no
    parameter (listing the model's parameter names), or when nothing is personal.
    """
    spec = param_spec(module)
    names = set()
    problems = []
    for pattern in personal.patterns:
        matched = [n for n in spec.names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            problems.append(
                f"{personal.field}: the pattern {pattern!r} matches no parameter of the model; "
                f"its parameters are {', '.join(spec.names)}"
            )
        names.update(matched)
    if personal.norm_layers:
        found = [
            f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules()
            if isinstance(sub, NORM_LAYERS)
            for name, _ in sub.named_parameters(recurse=False)
        ]
        if not found:
            problems.append(
                f"{personal.field}: the model has no normalization layer with parameters "
                "(BatchNorm, GroupNorm, LayerNorm, InstanceNorm with affine=True); FedBN "
                f"needs one. Its parameters are {', '.join(spec.names)}"
            )
        names.update(n for n in found if n in spec.names)
    if problems:
        raise ConfigError(problems)
    mask = torch.zeros(spec.num_params, dtype=torch.bool)
    for name, offset, size in zip(spec.names, spec.offsets, spec.sizes, strict=True):
        if name in names:
            mask[offset : offset + size] = True
    return mask


def with_model(algorithm: Algorithm, module: nn.Module) -> Algorithm:
    """``algorithm`` with its personal parameters resolved against ``module`` (unchanged
    when it has none)."""
    if algorithm.personal is None:
        return algorithm
    mask = personal_mask(algorithm.personal, module)
    return replace(algorithm, personal=replace(algorithm.personal, mask=mask))


def with_personal(algorithm: Algorithm, patterns: tuple[str, ...], *, field: str) -> Algorithm:
    """``algorithm`` with the parameters matching ``patterns`` also personal (FedPer's
    mechanism on any algorithm; a mixture of experts' personal gate): added to its own
    personal patterns, or its only ones. ``field`` is named in errors. Raises
    :class:`~fedloom.errors.ConfigError` for an algorithm with a whole personal model
    (Ditto), which has no personal coordinates to add to."""
    if not patterns:
        return algorithm
    if algorithm.personal_model is not None:
        raise ConfigError(
            f"{field}: {algorithm.name} keeps a whole personal model per client, so no single "
            f"parameters ({', '.join(patterns)}) can be personal on top; use a shared gate or "
            "an algorithm such as fedavg or fedper"
        )
    if algorithm.personal is None:
        return replace(algorithm, personal=Personal(patterns=tuple(patterns), field=field))
    extra = tuple(p for p in patterns if p not in algorithm.personal.patterns)
    merged = (*algorithm.personal.patterns, *extra)
    return replace(algorithm, personal=replace(algorithm.personal, patterns=merged, mask=None))


def personalized_params(
    params: torch.Tensor, mask: torch.Tensor, own: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    """The global ``params`` with the personal coordinates replaced by the client's stored
    values, or ``None`` when the client has none (it uses the global model)."""
    values = own.get(PERSONAL_VALUES)
    if values is None:
        return None
    start = params.clone()
    start[mask] = values.to(start.dtype)
    return start


def personalized_models(algorithm: Algorithm, state: ServerState) -> dict[int, torch.Tensor]:
    """Every client's personalized model (the global shared part and its personal part, or
    its whole personal model under Ditto), for the clients that have one; the others use the
    global model."""
    if algorithm.personal_model is not None:
        found = {}
        for client_id in list(state.clients):
            model = state.clients[client_id].get(PERSONAL_MODEL)
            if model is not None:
                found[int(client_id)] = model
        return found
    if algorithm.personal is None:
        return {}
    mask = algorithm.personal.resolved()
    models = {}
    for client_id in list(state.clients):
        own = personalized_params(state.params, mask, state.clients[client_id])
        if own is not None:
            models[int(client_id)] = own
    return models


def check_buffers(algorithm: Algorithm, buffers: str) -> None:
    """Raise :class:`~fedloom.errors.ConfigError` when ``algorithm`` keeps the normalization
    layers personal (FedBN) but their running statistics would be averaged
    (``buffers != "local"``)."""
    if algorithm.personal is not None and algorithm.personal.norm_layers and buffers != "local":
        raise ConfigError(
            f"model.buffers: {algorithm.name} keeps the normalization layers personal, so their "
            "running statistics must stay on the clients too; set model.buffers: local "
            "(simulate(..., buffers='local'))"
        )
