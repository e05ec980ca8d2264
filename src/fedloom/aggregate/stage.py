"""The three kinds of aggregation stage, the values they exchange, and ``chain``.

Aggregation is a pipeline of stages in the style of optax's ``GradientTransformation``
(and of its aggregating ``process(preprocessor, aggregator, postprocessor)``): every stage is
a value with ``init(params) -> state`` and an ``update`` that returns its output, and its
state is an explicit value the server keeps (and checkpoints) between rounds. A round's
results flow through three kinds, in order:

- **per-client** (:class:`ClientStage`): one :class:`Contribution` at a time (the update, its
  weight and the client's metadata) -> a new contribution: weighting, clipping, FedNova's
  work normalization, decompression, local DP noise. A per-client stage *reads* its state but
  does not change it per client: the result must not depend on the order in which clients
  arrive, nor on how they are split across workers. What a stage learns from the round
  (how many updates it clipped) it adds to the contribution's ``tallies``; the pipeline sums
  them over the cohort and hands the sums back once, in ``end_round(state, cohort)``, where
  the stage returns its new state (adaptive clipping's clip norm, Andrew et al. 2021).
- **the reduction** (:class:`Reducer`): folds the contributions into one update. Linear
  rules stream (``start`` / ``fold`` / ``finish``: running sums, O(P) memory for any cohort);
  rules that need every update at once (median, Krum) declare ``stacks = True`` and fold into
  a ``[K, P]`` matrix.
- **aggregate** (:class:`ServerStage`): the reduced update ``Delta`` plus the :class:`Cohort`
  summary and the global params -> a new ``Delta``: central DP noise, FedNova's rescaling,
  the server optimizer (learning rate, momentum, Adam, ...).

Randomness comes from :class:`RoundInfo`, derived from (run seed, round, client id) by
:mod:`fedloom.rng`, so a stage draws the same numbers on every engine and after a resume.

``chain(a, b, ...)`` composes stages of one kind into one stage whose state is the tuple of
their states. Every stage's output is checked (:func:`check_vector`): a plugin returning a
wrong type or shape raises :class:`~fedloom.errors.StageError` naming it, before the server
state changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedloom.errors import StageError
from fedloom.rng import derive_seed, torch_generator

__all__ = [
    "ClientStage",
    "Cohort",
    "PerClient",
    "Contribution",
    "Reducer",
    "RoundInfo",
    "ServerStage",
    "chain",
    "check_contribution",
    "check_vector",
]


@dataclass(frozen=True)
class RoundInfo:
    """What every stage may know about the round: the run seed and round number (for its
    random streams), the clients' local learning rate (q-FFL's ``L = 1 / lr``), the size
    of the population N (FedDyn's server state moves by ``|P_t| / N`` of the mean update)
    and how the cohort was sampled (DP-FedAvg's denominator and accountant):

    - ``sampling="uniform"``: exactly ``cohort_size`` M of the N clients;
    - ``sampling="poisson"``: each client independently with probability ``sampling_rate``
      q, so the cohort size varies (``cohort_size`` is ``None``; ``q N`` is expected).
    """

    seed: int = 0
    round: int = 0
    local_lr: float | None = None
    num_clients: int | None = None
    cohort_size: int | None = None  # M, the clients sampled per round (uniform sampling)
    sampling: str = "uniform"  # "uniform" or "poisson" (fedloom.data.sampling)
    sampling_rate: float | None = None  # q, each client's chance to be sampled (poisson)
    secret: int | None = field(default=None, repr=False)  # mixed into private_generator

    def private_generator(self, purpose: str) -> torch.Generator:
        """A generator for noise that must stay secret (DP noise): :meth:`generator`'s stream
        when ``secret`` is ``None`` (simulation: reproducible from the run seed), else one
        derived from the run seed *and* the secret, which a deployed server draws from the
        operating system and never writes down, so knowing the seed does not reveal it."""
        if self.secret is None:
            return self.generator(purpose)
        return torch_generator(derive_seed(self.seed, "secret", self.secret),
                               f"aggregate/{purpose}", self.round)  # fmt: skip

    @property
    def expected_cohort(self) -> float | None:
        """The expected cohort size: M (uniform), q N (poisson); ``None`` when unknown."""
        if self.sampling == "poisson":
            if self.sampling_rate is None or self.num_clients is None:
                return None
            return self.sampling_rate * self.num_clients
        return None if self.cohort_size is None else float(self.cohort_size)

    def generator(self, purpose: str, client_id: int | None = None) -> torch.Generator:
        """A torch generator for one stage's purpose in this round (and for one client)."""
        keys = (self.round,) if client_id is None else (self.round, client_id)
        return torch_generator(self.seed, f"aggregate/{purpose}", *keys)


@dataclass(frozen=True)
class Contribution:
    """One client's update on its way through the per-client stages.

    Attributes:
        update: ``[P]`` float32, the client's update as transformed so far.
        weight: the client's un-normalized weight (>= 0; set by the weighting stage, 1 before).
        client_id, num_examples, num_steps, statistics: the client's metadata, as reported.
        tallies: numbers summed over the cohort and given to the stages' ``end_round`` and to
            the aggregate stages (keys are namespaced by stage: ``"clip/clipped"``).
    """

    update: torch.Tensor
    weight: float
    client_id: int
    num_examples: int
    num_steps: int
    statistics: Mapping[str, float] = field(default_factory=dict)
    tallies: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Cohort:
    """The round's contributions in summary: how many reached the reduction, their total
    weight (after every per-client stage) and the sums of their tallies."""

    num_results: int
    total_weight: float
    tallies: Mapping[str, float] = field(default_factory=dict)


class ClientStage(Protocol):
    """Acts on each client's contribution; ``kind = "client"``."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def statistics(self) -> frozenset[str]:
        """The client statistics it reads (the clients are asked to report them)."""
        ...

    def init(self, params: torch.Tensor) -> Any: ...

    def update(self, contribution: Contribution, state: Any, *, info: RoundInfo) -> Contribution:
        """The transformed contribution (a pure function of its arguments)."""
        ...

    def end_round(self, state: Any, cohort: Cohort, *, info: RoundInfo) -> Any:
        """The state for the next round, from the cohort's tallies."""
        ...


class Reducer(Protocol):
    """Folds the contributions into one update; ``kind = "reduce"``.

    ``state`` lives across rounds (centered clipping's previous aggregate); ``acc`` lives
    within one round. ``fold`` owns the ``acc`` it is given and may update it in place (the
    running sum is the point of streaming); nothing else holds an accumulator.
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def stacks(self) -> bool:
        """True when it needs every update at once (memory ``K x P``)."""
        ...

    def init(self, params: torch.Tensor) -> Any: ...

    def start(self, params: torch.Tensor, *, expected: int | None = None) -> Any: ...

    def fold(self, acc: Any, contribution: Contribution) -> Any: ...

    def finish(self, acc: Any, state: Any, *, info: RoundInfo) -> tuple[torch.Tensor, Any]: ...

    def min_updates(self) -> int: ...


class ServerStage(Protocol):
    """Acts on the reduced update; ``kind = "server"``."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def init(self, params: torch.Tensor) -> Any: ...

    def update(
        self,
        delta: torch.Tensor,
        state: Any,
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]: ...


class PerClient:
    """Convenience base of a per-client stage without state: subclasses (frozen
    dataclasses) write ``update``; ``init`` gives ``()`` and ``end_round`` keeps it."""

    kind = "client"
    statistics: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return type(self).__name__

    def init(self, params: torch.Tensor) -> Any:
        return ()

    def end_round(self, state: Any, cohort: Cohort, *, info: RoundInfo) -> Any:
        return state


def check_vector(stage: str, value: object, num_params: int, *, what: str = "update") -> None:
    """Raise :class:`StageError` unless ``value`` is a float32 tensor of shape ``[P]``."""
    expected = f"a torch.float32 tensor of shape ({num_params},), the flat parameter vector"
    if not isinstance(value, torch.Tensor):
        raise StageError(
            f"aggregation stage {stage!r} returned {what} of type {type(value).__name__}; "
            f"expected {expected}. Fix the stage's update() to return a tensor"
        )
    if tuple(value.shape) != (num_params,):
        raise StageError(
            f"aggregation stage {stage!r} returned {what} of shape {tuple(value.shape)}; "
            f"expected ({num_params},). A stage must keep the flat shape [P] of the model's "
            "parameters (reshape per layer inside the stage if needed, then flatten again)"
        )
    if value.dtype != torch.float32:
        raise StageError(
            f"aggregation stage {stage!r} returned {what} of dtype {value.dtype}; expected "
            "torch.float32 (cast with .float() before returning)"
        )


def check_contribution(stage: str, value: object, num_params: int) -> Contribution:
    """``value`` if it is a usable contribution, else :class:`StageError` naming ``stage``."""
    if not isinstance(value, Contribution):
        raise StageError(
            f"per-client stage {stage!r} returned a {type(value).__name__}; expected a "
            "Contribution (return dataclasses.replace(contribution, update=..., weight=...))"
        )
    check_vector(stage, value.update, num_params)
    weight = value.weight
    if not isinstance(weight, float | int) or not math.isfinite(weight) or weight < 0:
        raise StageError(
            f"per-client stage {stage!r} gave client {value.client_id} the weight {weight!r}; "
            "weights must be finite non-negative numbers"
        )
    return value


@dataclass(frozen=True)
class ClientChain:
    """Per-client stages applied in order; the state is the tuple of their states."""

    stages: tuple[ClientStage, ...]
    kind: str = "client"

    @property
    def name(self) -> str:
        return "chain(" + ", ".join(s.name for s in self.stages) + ")"

    @property
    def statistics(self) -> frozenset[str]:
        return frozenset().union(*(s.statistics for s in self.stages))

    def init(self, params: torch.Tensor) -> tuple[Any, ...]:
        return tuple(s.init(params) for s in self.stages)

    def update(
        self, contribution: Contribution, state: tuple[Any, ...], *, info: RoundInfo
    ) -> Contribution:
        num_params = contribution.update.numel()
        for stage, sub in zip(self.stages, state, strict=True):
            contribution = check_contribution(
                stage.name, stage.update(contribution, sub, info=info), num_params
            )
        return contribution

    def end_round(self, state: tuple[Any, ...], cohort: Cohort, *, info: RoundInfo) -> Any:
        return tuple(
            s.end_round(sub, cohort, info=info) for s, sub in zip(self.stages, state, strict=True)
        )


@dataclass(frozen=True)
class ServerChain:
    """Aggregate stages applied in order; the state is the tuple of their states."""

    stages: tuple[ServerStage, ...]
    kind: str = "server"

    @property
    def name(self) -> str:
        return "chain(" + ", ".join(s.name for s in self.stages) + ")"

    def init(self, params: torch.Tensor) -> tuple[Any, ...]:
        return tuple(s.init(params) for s in self.stages)

    def update(
        self,
        delta: torch.Tensor,
        state: tuple[Any, ...],
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, tuple[Any, ...]]:
        new_states = []
        for stage, sub in zip(self.stages, state, strict=True):
            delta, sub = stage.update(delta, sub, cohort=cohort, params=params, info=info)
            check_vector(stage.name, delta, params.numel())
            new_states.append(sub)
        return delta, tuple(new_states)


def chain(*stages: Any) -> Any:
    """Compose stages of one kind (all per-client, or all aggregate) into one.

    >>> from fedloom.aggregate import adam, scale
    >>> chain(scale(0.5), adam(0.01)).name
    'chain(scale, adam)'
    """
    kinds = {getattr(s, "kind", None) for s in stages}
    if kinds == {"client"}:
        return ClientChain(tuple(stages))
    if kinds == {"server"} or not stages:
        return ServerChain(tuple(stages))
    raise StageError(
        f"chain() composes stages of one kind; got kinds {sorted(str(k) for k in kinds)}. "
        "Put per-client stages, the reducer and aggregate stages in pipeline(per_client=..., "
        "reduce=..., server=...)"
    )
