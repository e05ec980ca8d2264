"""DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models"), client-level, with central noise.

Each round: every update is clipped to L2 norm ``S`` (a per-client stage), the clipped
updates are *summed* with weight 1 each (the ``Sum`` reducer), Gaussian noise of standard
deviation ``z * S`` is added to the sum, and the sum is divided by the *expected* cohort
size ``qW`` (the fixed-denominator estimator: dividing by the number that actually arrived
would leak it). One client changes the sum by at most ``S``, so each round is a Gaussian
mechanism of noise multiplier ``z`` on a sampled cohort, and
:mod:`fedloom.privacy.accountant` composes the rounds.

The cohort is sampled as the round loop was told (``server.sampling``, given to every
stage in :class:`~fedloom.aggregate.RoundInfo`), and the accountant is told the same:

- ``"uniform"``: exactly ``M`` of the ``N`` clients; the expected cohort is ``M``;
  ``SampledWithoutReplacementDpEvent(N, M, GaussianDpEvent(z))``, replace-one neighbours,
  RDP accountant only;
- ``"poisson"``: each client with probability ``q`` (``server.fraction``); the expected
  cohort is ``q N``, not rounded; ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``,
  add-or-remove-one neighbours, RDP or PLD accountant (``accountant``).

The denominator is one of the paper's two estimators of the weighted average (its
Section 2, with every client weighing ``w_k = 1``, so the population's total weight ``W``
is ``N`` and ``qW`` is the expected cohort):

- ``denominator="fixed"`` (the default), ``f_f = sum_C w_k Delta_k / (qW)``: unbiased; one
  client moves it by at most ``S / (qW)`` (the paper's Lemma 1), so the noise is
  ``N(0, (z S / qW)^2)``, i.e. ``z S`` on the sum before the division.
- ``denominator="clipped_count"``, ``f_c = sum_C w_k Delta_k / max(q W_min, sum_C w_k)``:
  divides by the weight that actually arrived (here the number of clipped updates summed),
  but never by less than ``q W_min``. Lemma 1 bounds its sensitivity by ``2 S / (q W_min)``
  (adding one client changes the numerator by at most ``S`` and the denominator by at most
  1, each moving the estimate by at most ``S / (q W_min)``), so the noise added to ``f_c``
  is ``N(0, (2 z S / (q W_min))^2)`` (Algorithm 1's ``sigma`` for ``f_c``): the same noise
  multiplier ``z`` relative to its sensitivity, hence the same accounting.
  ``min_weight_fraction`` is ``W_min / W`` (default 1: ``q W_min`` is the expected cohort;
  smaller values follow the arriving count further down at the price of more noise).

Every round is released, whatever arrived: the ``Sum`` of no update is zero, so a round
whose cohort is empty (Poisson) or whose clients all failed still adds the noise, divides
by the expected cohort, and counts in the ledger (the stage's ``every_round`` asks the
round loop to run every round; skipping one would depend on who took part).

:class:`GaussianSumNoise` is the aggregate stage; its state is the privacy ledger (the
rounds it has noised, with the population, the sampling scheme and the expected cohort and
rate they ran with). It is part of the server state, so a checkpoint keeps it, a resumed
run never resets the budget spent and keeps accounting for the scheme that ran; a round
sampled otherwise than the ledger's is refused. It reports ``dp_epsilon`` after every
round.

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

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Le, Lt

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
from fedloom.data.sampling import Sampling, cohort_size
from fedloom.errors import ConfigError, FedloomError
from fedloom.privacy.accountant import (
    ACCOUNTANTS,
    Accountant,
    PrivacySetting,
    epsilon,
    noise_multiplier_for,
)
from fedloom.privacy.adaptive import AdaptiveNoise, adaptive_clipping, check_cohort
from fedloom.privacy.ledger import (
    Mechanism,
    describe_mechanism,
    recorded_mechanism,
    round_mechanism,
)
from fedloom.privacy.local_dp import local_program

__all__ = ["DENOMINATORS", "GaussianSumNoise", "calibrate", "dp_fedavg"]


DENOMINATORS = ("fixed", "clipped_count")


@dataclass(frozen=True)
class GaussianSumNoise:
    """Noise ``N(0, (z S)^2)`` on the sum of clipped updates, then ``/ qW`` (the expected
    cohort: ``M``, or ``q N`` with Poisson sampling); or, with the clipped-count
    denominator, the sum ``/ max(q W_min, weight that arrived)`` plus
    ``N(0, (2 z S / (q W_min))^2)`` (see the module doc)."""

    clip_norm: float
    noise_multiplier: float | None
    delta: float = 1e-5
    max_epsilon: float | None = None
    accountant: Accountant = "rdp"
    denominator: str = "fixed"
    min_weight_fraction: float = 1.0  # W_min / W, for the clipped-count denominator
    name = "dp_noise"
    kind = "server"
    every_round = True  # released whatever arrived, none included (Pipeline.every_round)

    @property
    def z(self) -> float:
        if self.noise_multiplier is None:
            raise ValueError(
                "DP-FedAvg's noise multiplier is not calibrated yet (fedloom.privacy.calibrate)"
            )
        return self.noise_multiplier

    def setting(self, mechanism: Mechanism, rounds: int) -> PrivacySetting:
        """What the accountant is asked: ``rounds`` rounds of ``mechanism``'s sampling."""
        n = mechanism["population"]
        if mechanism["sampling"] == "poisson":
            q = mechanism["rate"]
            return PrivacySetting(
                n, q * n, rounds, self.delta, "poisson", self.accountant, sampling_rate=q
            )
        return PrivacySetting(
            n, mechanism["cohort"], rounds, self.delta, "uniform", self.accountant
        )

    def _check_ledger(self, ledger: Mapping[str, Any], mechanism: Mechanism) -> None:
        """Refuse a round sampled otherwise than the rounds already in the ledger: the
        accountant composes one sampled mechanism, ``rounds`` times."""
        if not ledger["rounds"] or recorded_mechanism(ledger) == mechanism:
            return
        raise FedloomError(
            f"the privacy ledger holds {ledger['rounds']} rounds of "
            f"{describe_mechanism(recorded_mechanism(ledger))}, but this round has {describe_mechanism(mechanism)}; "
            "the accountant composes one sampled mechanism, so a private run keeps its "
            "population, fraction and server.sampling: start a new run to change them"
        )

    def stop_reason(self, ledger: dict[str, Any], info: RoundInfo) -> str | None:
        """Why the next round must not run (it would exceed ``max_epsilon``), or ``None``."""
        mechanism = round_mechanism(info)
        if self.max_epsilon is None or mechanism is None:
            return None
        self._check_ledger(ledger, mechanism)
        after = epsilon(self.setting(mechanism, int(ledger["rounds"]) + 1), self.z)
        if after <= self.max_epsilon:
            return None
        return (
            f"the privacy budget: round {int(ledger['rounds']) + 1} would bring epsilon to "
            f"{after:.4g}, over max_epsilon {self.max_epsilon:g}"
        )

    def init(self, params: torch.Tensor) -> dict[str, Any]:
        return {"rounds": 0, "population": 0, "cohort": 0, "sampling": None, "rate": None}

    def update(
        self,
        delta: torch.Tensor,
        ledger: dict[str, Any],
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]:
        mechanism = round_mechanism(info)
        expected = info.expected_cohort
        if mechanism is None or expected is None:
            raise ValueError(
                "DP-FedAvg needs the population and how the cohort was sampled (RoundInfo's "
                "num_clients with cohort_size, or with sampling='poisson' and sampling_rate)"
            )
        self._check_ledger(ledger, mechanism)
        std = self.z * self.clip_norm
        noise = torch.randn(
            delta.shape, generator=info.private_generator("dp_noise"), dtype=torch.float64
        )
        if self.denominator == "clipped_count":  # f_c, sensitivity 2 S / (q W_min)
            floor = self.min_weight_fraction * expected  # q W_min
            noised = delta.double() / max(floor, cohort.total_weight) + (2 * std / floor) * noise
        else:  # f_f, sensitivity S / (qW)
            noised = (delta.double() + std * noise) / expected
        spent = {"rounds": int(ledger["rounds"]) + 1, **mechanism}
        return noised.to(torch.float32), spent

    def metrics(self, ledger: dict[str, Any]) -> dict[str, float]:
        """``dp_epsilon`` (at ``delta``) after the rounds in the ledger, for the sampling
        they ran with."""
        if not ledger["rounds"]:
            return {"dp_epsilon": 0.0}
        return {
            "dp_epsilon": epsilon(
                self.setting(recorded_mechanism(ledger), ledger["rounds"]), self.z
            )
        }


def dp_fedavg(
    clip_norm: Annotated[float, Gt(0)] = 1.0,
    noise_multiplier: Annotated[float, Ge(0)] | None = 1.0,
    delta: Annotated[float, Gt(0), Lt(1)] = 1e-5,
    max_epsilon: Annotated[float, Gt(0)] | None = None,
    accountant: Literal["rdp", "pld"] = "rdp",
    denominator: Literal["fixed", "clipped_count"] = "fixed",
    min_weight_fraction: Annotated[float, Gt(0), Le(1)] | None = None,
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
    Epsilon at ``delta`` is reported every round, from dp-accounting's ``accountant`` (rdp;
    pld only with Poisson sampling, ``server.sampling: poisson``); the run stops before
    exceeding ``max_epsilon`` (``noise_multiplier: null``: calibrated to spend it exactly).
    ``denominator: clipped_count`` is the paper's ``f_c`` instead: the sum divided by
    ``max(q W_min, the number of updates summed)``, with noise of std
    ``2 noise_multiplier clip_norm / (q W_min)``, its sensitivity times z (the paper's
    Lemma 1); ``q W_min`` is ``min_weight_fraction`` (default 1) times the expected cohort.

    >>> algorithm = dp_fedavg(clip_norm=0.5, noise_multiplier=1.1, delta=1e-5)
    >>> [s.name for s in algorithm.aggregation.server]
    ['dp_noise', 'scale']

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
    if accountant not in ACCOUNTANTS:
        raise ConfigError(
            f"algorithm.accountant: {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}"
        )
    if denominator not in DENOMINATORS:
        raise ConfigError(
            f"algorithm.denominator: {denominator!r}; allowed: {', '.join(DENOMINATORS)}"
        )
    if min_weight_fraction is not None and denominator != "clipped_count":
        raise ConfigError(
            "algorithm.min_weight_fraction: only the clipped_count denominator has a W_min; "
            "set algorithm.denominator: clipped_count, or leave min_weight_fraction out"
        )
    if min_weight_fraction is not None and not 0 < min_weight_fraction <= 1:
        raise ConfigError(
            f"algorithm.min_weight_fraction: must be in (0, 1], got {min_weight_fraction}"
        )
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
    if target_quantile is not None and denominator != "fixed":
        raise ConfigError(
            "algorithm.denominator: adaptive clipping (target_quantile) is implemented for the "
            "fixed denominator only; leave denominator: fixed"
        )
    if local_dp and (denominator != "fixed" or accountant != "rdp"):
        raise ConfigError(
            "algorithm.local_dp: each client noises its own update and the server only "
            "averages, so denominator and accountant do not apply; leave them at their "
            "defaults (fixed, rdp)"
        )
    if local_dp:  # the clients clip and noise; the server only averages
        program, ledger = local_program(
            clip_norm, noise_multiplier, delta, max_epsilon=max_epsilon,
            target_quantile=target_quantile,
        )  # fmt: skip
        aggregation = pipeline(weighting="uniform", per_client=ledger, server=scale(server_lr))
        return Algorithm(name="dp_fedavg", program=program, aggregation=aggregation)
    noise = GaussianSumNoise(
        clip_norm,
        noise_multiplier,
        delta,
        max_epsilon,
        accountant,
        denominator,
        1.0 if min_weight_fraction is None else min_weight_fraction,
    )
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


def calibrate(
    algorithm: Algorithm,
    *,
    population: int,
    fraction: float,
    rounds: int,
    sampling: Sampling = "uniform",
) -> Algorithm:
    """``algorithm`` ready for ``rounds`` rounds that sample ``fraction`` of ``population``
    clients as ``sampling`` says: every uncalibrated noise stage's multiplier set to the
    smallest that keeps the rounds within its ``max_epsilon`` (a :class:`ConfigError` naming
    ``algorithm.max_epsilon`` when none up to 1000 does), and a :class:`ConfigError` naming
    ``algorithm.accountant`` when a stage's accountant cannot account for the sampling;
    other algorithms are returned as they are."""
    info = RoundInfo(
        num_clients=population,
        cohort_size=cohort_size(population, fraction) if sampling == "uniform" else None,
        sampling=sampling,
        sampling_rate=fraction if sampling == "poisson" else None,
    )
    mechanism = round_mechanism(info)
    stages = []
    changed = False
    for stage in algorithm.aggregation.server:
        if isinstance(stage, AdaptiveNoise) and mechanism is not None:
            # the overall z is calibrated and accounted as fixed clipping's (Theorem 1)
            calibrated = _calibrated(stage.noise, mechanism, rounds, sampling)
            if calibrated is not stage.noise:
                stage = replace(stage, noise=calibrated)
                changed = True
            check_cohort(stage, info)  # sigma_b too small for z: an error before round 1
        if isinstance(stage, GaussianSumNoise) and mechanism is not None:
            calibrated = _calibrated(stage, mechanism, rounds, sampling)
            if calibrated is not stage:
                stage, changed = calibrated, True
        stages.append(stage)
    return algorithm.with_aggregation(server=tuple(stages)) if changed else algorithm


def _calibrated(
    stage: GaussianSumNoise, mechanism: Mechanism, rounds: int, sampling: Sampling
) -> GaussianSumNoise:
    """``stage`` with the smallest noise multiplier that keeps ``rounds`` rounds of
    ``mechanism`` within its ``max_epsilon`` (``stage`` itself when it has a multiplier);
    a :class:`ConfigError` when its accountant cannot account for ``sampling``."""
    if stage.accountant == "pld" and sampling != "poisson":
        raise ConfigError(
            "algorithm.accountant: pld accounts only for Poisson sampling in "
            f"dp-accounting, and server.sampling is {sampling}; set server.sampling: "
            "poisson, or algorithm.accountant: rdp"
        )
    if stage.noise_multiplier is not None:
        return stage
    assert stage.max_epsilon is not None  # the factory requires one of the two
    try:
        z = noise_multiplier_for(stage.setting(mechanism, rounds), stage.max_epsilon)
    except ConfigError as exc:
        raise ConfigError(f"algorithm.max_epsilon: {exc}") from None
    return replace(stage, noise_multiplier=z)
