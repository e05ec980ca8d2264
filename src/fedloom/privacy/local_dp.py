"""Local differential privacy for DP-FedAvg: every client clips and noises its own update.

With central DP the server adds the noise, so it sees every clipped update in the clear.
With local DP nobody has to be trusted: each client clips its update ``u`` to L2 norm ``S``
and adds Gaussian noise itself, before anything leaves it,

    ``u~ = u * min(1, S / ||u||) + N(0, (z S)^2 I)``,

and the server only averages what arrives. The client's random stream is derived by
:mod:`fedloom.rng` from its seed for the round (``plan.seed``, itself derived from the run
seed, the round and the client id), so every simulation engine sends the same vector. A
deployed client mixes a secret of its own into that seed (the server knows ``plan.seed``
and could regenerate noise drawn from it alone); ``run_client(reproducible_noise=True)``
drops the secret to reproduce a simulation.

:class:`LocalGaussian` is that clip-and-noise step, an update transform of the client
program (:class:`~fedloom.client.ClientProgram`): a portable value, so the server ships it
to deployed clients as data (the ``Program.update_transforms`` field of the wire protocol)
and the client runs it with code it has installed itself.

The guarantee, per client and without trusting anyone: any two updates of one client are
at most ``2 S`` apart after clipping, so one round is the Gaussian mechanism with
sensitivity ``2 S`` and noise ``z S``, i.e. noise multiplier ``z / 2``; a client's rounds
compose. Its epsilon counts only the rounds it took part in, with no amplification by
sampling (the client does not trust the server's sampling, so it cannot count on it). The
number is dp-accounting's, exact: ``k`` Gaussian mechanisms of noise multiplier ``z / 2``
compose to one Gaussian mechanism of multiplier ``z / (2 sqrt(k))`` (Gaussian DP, Dong, Roth
and Su 2022; dp-accounting's PLD accountant makes the same reduction for
``SelfComposedDpEvent(GaussianDpEvent(z / 2), k)``), whose epsilon at the configured delta
is ``dp_accounting.get_epsilon_gaussian(z / (2 sqrt(k)), delta)``, the analytic Gaussian
mechanism of Balle and Wang 2018 (:func:`local_epsilon`).

:class:`LocalLedger` is the server's per-client stage that keeps the count ``k`` of every
client (the rounds whose update reached the aggregation) and reports ``dp_local_epsilon``,
the largest local epsilon of any client so far, after every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch

from fedloom.aggregate.stage import Cohort, Contribution, PerClient, RoundInfo
from fedloom.client.portable import portable
from fedloom.client.program import ClientProgram
from fedloom.errors import ConfigError
from fedloom.rng import torch_generator

__all__ = ["LocalGaussian", "LocalLedger", "local_epsilon", "local_epsilons", "local_program"]

TALLY = "local_dp/client/"  # + the client id: 1 for every update that reached the aggregation


@portable("local_dp")
@dataclass(frozen=True)
class LocalGaussian:
    """Clip the update to L2 norm ``clip_norm`` and add ``N(0, (noise_multiplier *
    clip_norm)^2)`` to every coordinate, on the client (an update transform).

    The arithmetic is float64 and the result is cast to float32 once; the noise comes from
    ``torch_generator(seed, "local_dp")`` with the client's seed for the round.
    """

    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"the clip norm must be > 0, got {self.clip_norm}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"the noise multiplier must be >= 0, got {self.noise_multiplier}")

    def __call__(self, update: torch.Tensor, *, seed: int) -> torch.Tensor:
        exact = update.double()
        norm = float(exact.norm())
        if norm > self.clip_norm:
            exact = exact * (self.clip_norm / norm)
        noise = torch.randn(
            exact.shape, generator=torch_generator(seed, "local_dp"), dtype=torch.float64
        )
        return (exact + (self.noise_multiplier * self.clip_norm) * noise).to(update.dtype)


@lru_cache(maxsize=1024)
def local_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The local epsilon at ``delta`` of a client that sent ``rounds`` updates, each clipped
    to ``S`` and noised with std ``noise_multiplier * S`` (sensitivity ``2 S``):
    ``dp_accounting.get_epsilon_gaussian(noise_multiplier / (2 sqrt(rounds)), delta)``, the
    exact epsilon of their composition. 0 after no round, ``inf`` without noise."""
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting as dpa

    return float(dpa.get_epsilon_gaussian(noise_multiplier / (2 * math.sqrt(rounds)), delta))


def local_epsilons(
    counts: dict[int, int], noise_multiplier: float, delta: float
) -> dict[int, float]:
    """Every client's local epsilon from its count of rounds (a :class:`LocalLedger`'s state)."""
    return {k: local_epsilon(noise_multiplier, n, delta) for k, n in counts.items()}


@dataclass(frozen=True)
class LocalLedger(PerClient):
    """The server's record of local DP: how many noised updates of every client reached the
    aggregation. It leaves the contributions as they are; its state is ``{client id: count}``
    (part of the server state, so a checkpoint keeps it)."""

    noise_multiplier: float
    delta: float = 1e-5

    @property
    def name(self) -> str:
        return "local_dp"

    def init(self, params: torch.Tensor) -> dict[int, int]:
        return {}

    def update(self, contribution: Contribution, state: Any, *, info: RoundInfo) -> Contribution:
        tallies = {**contribution.tallies, f"{TALLY}{contribution.client_id}": 1.0}
        return replace(contribution, tallies=tallies)

    def end_round(self, state: dict[int, int], cohort: Cohort, *, info: RoundInfo) -> Any:
        counts = dict(state)
        for key, value in cohort.tallies.items():
            if key.startswith(TALLY):
                client = int(key[len(TALLY) :])
                counts[client] = counts.get(client, 0) + round(value)
        return counts

    def metrics(self, state: dict[int, int]) -> dict[str, float]:
        """``dp_local_epsilon``: the largest local epsilon (at ``delta``) of any client."""
        worst = max(state.values(), default=0)
        return {"dp_local_epsilon": local_epsilon(self.noise_multiplier, worst, self.delta)}


def local_program(
    clip_norm: float,
    noise_multiplier: float | None,
    delta: float,
    *,
    max_epsilon: float | None = None,
    target_quantile: float | None = None,
) -> tuple[ClientProgram, LocalLedger]:
    """DP-FedAvg's local variant: the clients' program (clip and noise) and the server's
    ledger; options it cannot honour are :class:`ConfigError`\\ s naming the field."""
    if target_quantile is not None:
        raise ConfigError(
            "algorithm.target_quantile: adaptive clipping needs every client's clipped-or-not "
            "bit, which local_dp never shows the server; use a fixed clip_norm with local_dp"
        )
    if max_epsilon is not None or noise_multiplier is None:
        raise ConfigError(
            "algorithm.max_epsilon: with local_dp every client has its own epsilon (reported as "
            "dp_local_epsilon, the largest); a budget stop is not available: give "
            "noise_multiplier and leave max_epsilon unset"
        )
    transform = LocalGaussian(clip_norm, noise_multiplier)
    return ClientProgram(update_transforms=(transform,)), LocalLedger(noise_multiplier, delta)
