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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Lt

from fedloom.aggregate import Cohort, RoundInfo, Sum, clip, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.errors import ConfigError
from fedloom.privacy.accountant import PrivacySetting, epsilon

__all__ = ["GaussianSumNoise", "dp_fedavg"]


@dataclass(frozen=True)
class GaussianSumNoise:
    """Noise ``N(0, (z S)^2)`` on the sum of clipped updates, then ``/ M`` (expected cohort)."""

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    name = "dp_noise"
    kind = "server"

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
        std = self.noise_multiplier * self.clip_norm
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
        setting = PrivacySetting(
            ledger["population"], ledger["cohort"], ledger["rounds"], self.delta,
            sampling="uniform", accountant="rdp",
        )  # fmt: skip
        return {"dp_epsilon": epsilon(setting, self.noise_multiplier)}


def dp_fedavg(
    clip_norm: Annotated[float, Gt(0)] = 1.0,
    noise_multiplier: Annotated[float, Ge(0)] = 1.0,
    delta: Annotated[float, Gt(0), Lt(1)] = 1e-5,
    *,
    server_lr: float = 1.0,
    weighting: str = "uniform",
) -> Algorithm:
    """DP-FedAvg: clip to ``clip_norm``, sum, Gaussian noise ``noise_multiplier * clip_norm``,
    divide by the expected cohort; epsilon at ``delta`` reported every round."""
    if not clip_norm > 0:
        raise ConfigError(f"algorithm.clip_norm: must be > 0, got {clip_norm}")
    if not noise_multiplier >= 0:
        raise ConfigError(f"algorithm.noise_multiplier: must be >= 0, got {noise_multiplier}")
    if not 0 < delta < 1:
        raise ConfigError(f"algorithm.delta: must be in (0, 1), got {delta}")
    if weighting != "uniform":
        raise ConfigError(
            f"server.weighting: DP-FedAvg sums clipped updates with weight 1 each (uniform); "
            f"{weighting!r} would change one client's influence beyond the clip norm"
        )
    return Algorithm(
        name="dp_fedavg",
        aggregation=pipeline(
            weighting="uniform",
            per_client=(clip(clip_norm),),
            reduce=Sum(),
            server=(GaussianSumNoise(clip_norm, noise_multiplier, delta), scale(server_lr)),
        ),
    )
