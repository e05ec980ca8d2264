"""DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models"), client-level, with central noise.

Each round: every update is clipped to L2 norm ``S`` (a per-client stage), the clipped
updates are *summed* with weight 1 each (the ``Sum`` reducer), Gaussian noise of standard
deviation ``z * S`` is added to the sum, and the sum is divided by the *expected* cohort
size ``M`` (the fixed-denominator estimator: dividing by the number that actually arrived
would leak it). One client changes the sum by at most ``S``, so each round is a Gaussian
mechanism of noise multiplier ``z`` on a sampled cohort, and
:mod:`fedloom.privacy.accountant` composes the rounds.

:class:`GaussianSumNoise` is the aggregate stage; its state is the privacy ledger (the
rounds it has noised, with the population and cohort they ran with). It is part of the
server state, so a checkpoint keeps it and a resumed run never resets the budget spent. It
reports ``dp_epsilon`` after every round (uniform fixed-size sampling, as fedloom's round
loop samples, under the RDP accountant: see the accountant module for why).

A budget (``max_epsilon``) stops the run before the first round that would exceed it: the
round loop asks every stage's ``stop_reason`` before sampling a cohort, and the run ends
there with its model and checkpoint saved. Without a ``noise_multiplier``, the budget is
spent exactly by the configured rounds: :func:`calibrate` computes the smallest noise
multiplier that keeps ``rounds`` rounds within it.

With ``target_quantile`` the clip norm adapts to that quantile of the update norms
(:mod:`fedloom.privacy.adaptive`); the accounting stays this module's. With ``local_dp``
the clients clip and noise their own updates and the server only averages
(:mod:`fedloom.privacy.local_dp`, which keeps the per-client accounting).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Lt

from fedloom.aggregate import (
    ClientStage,
    Cohort,
    RoundInfo,
    ServerStage,
    Sum,
    clip,
    pipeline,
    scale,
)
from fedloom.algorithms.base import Algorithm
from fedloom.errors import ConfigError
from fedloom.privacy.accountant import PrivacySetting, epsilon, noise_multiplier_for
from fedloom.privacy.adaptive import AdaptiveNoise, adaptive_clipping, check_cohort
from fedloom.privacy.local_dp import local_program

__all__ = ["GaussianSumNoise", "calibrate", "dp_fedavg"]


@dataclass(frozen=True)
class GaussianSumNoise:
    """Noise ``N(0, (z S)^2)`` on the sum of clipped updates, then ``/ M`` (expected cohort)."""

    clip_norm: float
    noise_multiplier: float | None
    delta: float = 1e-5
    max_epsilon: float | None = None
    name = "dp_noise"
    kind = "server"

    @property
    def z(self) -> float:
        if self.noise_multiplier is None:
            raise ValueError(
                "DP-FedAvg's noise multiplier is not calibrated yet (fedloom.privacy.calibrate)"
            )
        return self.noise_multiplier

    def _setting(self, population: int, cohort: int, rounds: int) -> PrivacySetting:
        return PrivacySetting(
            population, cohort, rounds, self.delta, sampling="uniform", accountant="rdp"
        )

    def stop_reason(self, ledger: dict[str, int], info: RoundInfo) -> str | None:
        """Why the next round must not run (it would exceed ``max_epsilon``), or ``None``."""
        if self.max_epsilon is None or info.num_clients is None or info.cohort_size is None:
            return None
        setting = self._setting(info.num_clients, info.cohort_size, int(ledger["rounds"]) + 1)
        after = epsilon(setting, self.z)
        if after <= self.max_epsilon:
            return None
        return (
            f"the privacy budget: round {int(ledger['rounds']) + 1} would bring epsilon to "
            f"{after:.4g}, over max_epsilon {self.max_epsilon:g}"
        )

    def init(self, params: torch.Tensor) -> dict[str, int]:
        return {"rounds": 0, "population": 0, "cohort": 0}

    def update(
        self,
        delta: torch.Tensor,
        ledger: dict[str, int],
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]:
        if info.cohort_size is None or info.num_clients is None:
            raise ValueError("DP-FedAvg needs the population and the expected cohort size")
        std = self.z * self.clip_norm
        noise = torch.randn(delta.shape, generator=info.generator("dp_noise"), dtype=torch.float64)
        noised = (delta.double() + std * noise) / info.cohort_size
        spent = {
            "rounds": int(ledger["rounds"]) + 1,
            "population": info.num_clients,
            "cohort": info.cohort_size,
        }
        return noised.to(torch.float32), spent

    def metrics(self, ledger: dict[str, int]) -> dict[str, float]:
        """``dp_epsilon`` (at ``delta``) after the rounds in the ledger."""
        if not ledger["rounds"]:
            return {"dp_epsilon": 0.0}
        setting = self._setting(ledger["population"], ledger["cohort"], ledger["rounds"])
        return {"dp_epsilon": epsilon(setting, self.z)}


def dp_fedavg(
    clip_norm: Annotated[float, Gt(0)] = 1.0,
    noise_multiplier: Annotated[float, Ge(0)] | None = 1.0,
    delta: Annotated[float, Gt(0), Lt(1)] = 1e-5,
    max_epsilon: Annotated[float, Gt(0)] | None = None,
    target_quantile: Annotated[float, Gt(0), Lt(1)] | None = None,
    clip_learning_rate: Annotated[float, Gt(0)] = 0.2,
    clipped_count_stddev: Annotated[float, Ge(0)] | None = None,
    local_dp: bool = False,
    *,
    server_lr: float = 1.0,
    weighting: str = "uniform",
) -> Algorithm:
    """Client-level DP-FedAvg (McMahan et al. 2018): central noise, adaptive clipping or local DP.

    Updates are clipped to ``clip_norm`` and summed, noise of std
    ``noise_multiplier * clip_norm`` is added, and the sum is divided by the expected cohort.
    Epsilon at ``delta`` is reported every round; the run stops before exceeding
    ``max_epsilon`` (``noise_multiplier: null``: calibrated to spend it exactly).

    ``target_quantile`` turns on adaptive clipping (Andrew et al. 2021,
    :mod:`fedloom.privacy.adaptive`): ``clip_norm`` is the initial norm, which then follows
    that quantile of the update norms at rate ``clip_learning_rate``, from a count noised
    with ``clipped_count_stddev`` (default: expected cohort / 20); ``noise_multiplier`` stays
    the overall one the accountant uses. ``local_dp`` makes every client clip and noise its
    own update before sending it (:mod:`fedloom.privacy.local_dp`); the server only averages.
    """
    if not clip_norm > 0:
        raise ConfigError(f"algorithm.clip_norm: must be > 0, got {clip_norm}")
    if noise_multiplier is None and max_epsilon is None:
        raise ConfigError(
            "algorithm.noise_multiplier: give a noise multiplier, or max_epsilon to have one "
            "calibrated to the run's rounds"
        )
    if noise_multiplier is not None and not noise_multiplier >= 0:
        raise ConfigError(f"algorithm.noise_multiplier: must be >= 0, got {noise_multiplier}")
    if max_epsilon is not None and not max_epsilon > 0:
        raise ConfigError(f"algorithm.max_epsilon: must be > 0, got {max_epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"algorithm.delta: must be in (0, 1), got {delta}")
    if weighting != "uniform":
        raise ConfigError(
            f"server.weighting: DP-FedAvg sums clipped updates with weight 1 each (uniform); "
            f"{weighting!r} would change one client's influence beyond the clip norm"
        )
    if clipped_count_stddev is not None and target_quantile is None:
        raise ConfigError(
            "algorithm.clipped_count_stddev: only adaptive clipping noises a count; set "
            "algorithm.target_quantile too, or leave clipped_count_stddev unset"
        )
    if local_dp:  # the clients clip and noise; the server only averages
        program, ledger = local_program(
            clip_norm, noise_multiplier, delta, max_epsilon=max_epsilon,
            target_quantile=target_quantile,
        )  # fmt: skip
        aggregation = pipeline(weighting="uniform", per_client=ledger, server=scale(server_lr))
        return Algorithm(name="dp_fedavg", program=program, aggregation=aggregation)
    noise = GaussianSumNoise(clip_norm, noise_multiplier, delta, max_epsilon)
    per_client: ClientStage = clip(clip_norm)
    noise_stage: ServerStage = noise
    if target_quantile is not None:
        per_client, noise_stage = adaptive_clipping(
            noise, target_quantile=target_quantile, learning_rate=clip_learning_rate,
            count_stddev=clipped_count_stddev,
        )  # fmt: skip
    return Algorithm(
        name="dp_fedavg",
        aggregation=pipeline(
            weighting="uniform",
            per_client=(per_client,),
            reduce=Sum(),
            server=(noise_stage, scale(server_lr)),
        ),
    )


def calibrate(algorithm: Algorithm, *, population: int, cohort: int, rounds: int) -> Algorithm:
    """``algorithm`` with every uncalibrated noise stage's multiplier set to the smallest that
    keeps ``rounds`` rounds within its ``max_epsilon`` (a :class:`ConfigError` naming
    ``algorithm.max_epsilon`` when none up to 1000 does); other algorithms are returned as
    they are. With adaptive clipping it also checks, now that the expected cohort is known,
    that the clipped count's noise leaves the updates a noise multiplier (a
    :class:`ConfigError` naming ``algorithm.clipped_count_stddev``)."""
    stages = []
    changed = False
    for stage in algorithm.aggregation.server:
        if isinstance(stage, AdaptiveNoise):  # the overall z is calibrated as fixed clip's
            if stage.noise.noise_multiplier is None:
                stage = replace(stage, noise=_calibrated(stage.noise, population, cohort, rounds))
                changed = True
            check_cohort(stage, cohort)  # sigma_b too small for z: an error before round 1
        if isinstance(stage, GaussianSumNoise) and stage.noise_multiplier is None:
            stage = _calibrated(stage, population, cohort, rounds)
            changed = True
        stages.append(stage)
    return algorithm.with_aggregation(server=tuple(stages)) if changed else algorithm


def _calibrated(
    stage: GaussianSumNoise, population: int, cohort: int, rounds: int
) -> GaussianSumNoise:
    """``stage`` with the smallest noise multiplier that keeps ``rounds`` rounds within its
    ``max_epsilon``."""
    assert stage.max_epsilon is not None  # the factory requires one of the two
    setting = stage._setting(population, cohort, rounds)
    try:
        z = noise_multiplier_for(setting, stage.max_epsilon)
    except ConfigError as exc:
        raise ConfigError(f"algorithm.max_epsilon: {exc}") from None
    return replace(stage, noise_multiplier=z)
