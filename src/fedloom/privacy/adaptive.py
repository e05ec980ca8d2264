"""Adaptive clipping for DP-FedAvg (Andrew, Thakkar, McMahan and Ramaswamy 2021,
"Differentially Private Learning with Adaptive Clipping", Algorithm 1 and Theorem 1).

Instead of a fixed clip norm ``S``, the norm follows a target quantile ``gamma`` of the
clients' update norms, estimated privately from one bit per client. In round ``t``, with
clip norm ``S_t`` and expected cohort ``M``:

1. every client's bit is ``b_k = 1[||u_k|| <= S_t]`` (not clipped), and ``u_k`` is clipped
   to ``S_t`` (the per-client stage :class:`AdaptiveClip`);
2. the clipped updates are summed and noised with std ``z_Delta * S_t`` (the aggregate stage
   :class:`AdaptiveNoise`, which wraps DP-FedAvg's :class:`GaussianSumNoise`);
3. the bits are summed and noised with std ``sigma_b``:
   ``b~ = (sum_k (b_k - 1/2) + N(0, sigma_b^2)) / M + 1/2``;
4. ``S_{t+1} = S_t * exp(-eta_C * (b~ - gamma))`` (the geometric update).

Step 3 sums the *centered* bits ``b_k - 1/2``, as the paper's analysis and TensorFlow
Privacy's quantile estimator do: adding or removing one client then moves the noised sum by
at most 1/2, which is where Theorem 1's ``2 sigma_b`` comes from. When all ``M`` sampled
clients arrive it equals ``(sum_k b_k + N(0, sigma_b^2)) / M``, the form in Algorithm 1.

Privacy (Theorem 1): one round releases the noised sum of clipped updates and the noised
bit count, a Gaussian mechanism on the pair. Its effective noise multiplier is
``z = (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2)``: the same as fixed clipping with multiplier
``z``. So the run is accounted for exactly as fixed-clip DP-FedAvg with the configured
``noise_multiplier`` ``z`` (same accountant, same ledger, same ``dp_epsilon``), and the
updates get the larger ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` (:func:`update_noise`),
which needs ``2 sigma_b > z``. The paper recommends ``sigma_b = M / 20``, ``eta_C = 0.2`` and
``gamma = 0.5`` (the median); ``sigma_b`` defaults to ``M / 20`` (0 when ``z = 0``).

Both stages follow ``S_t``: :class:`AdaptiveClip` clips to it, :class:`AdaptiveNoise` scales
its noise by it. Each keeps it in its state (checkpointed with the server state) and moves
it with the same :func:`next_clip_norm`, from the same cohort tallies and the same random
stream, so the two never differ. ``dp_clip_norm`` reports it after every round: the clip
norm the next round uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from fedloom.aggregate.robust import row_distances
from fedloom.aggregate.stage import Cohort, Contribution, PerClient, RoundInfo
from fedloom.errors import ConfigError, StageError

if TYPE_CHECKING:
    from fedloom.privacy.dp_fedavg import GaussianSumNoise

__all__ = [
    "AdaptiveClip",
    "AdaptiveNoise",
    "adaptive_clipping",
    "check_cohort",
    "count_stddev",
    "effective_noise",
    "next_clip_norm",
    "update_noise",
]

UNCLIPPED = "adaptive_clip/unclipped"  # the tally of the bits b_k
RECOMMENDED_COUNT_SHARE = 1 / 20  # sigma_b = M / 20, Andrew et al.'s recommendation


def effective_noise(update_multiplier: float, count_stddev: float) -> float:
    """Theorem 1: ``z = (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2)`` (0 when either is 0)."""
    if update_multiplier == 0 or count_stddev == 0:
        return 0.0
    return float((update_multiplier**-2 + (2 * count_stddev) ** -2) ** -0.5)


def update_noise(noise_multiplier: float, count_stddev: float) -> float:
    """The updates' noise multiplier ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` that, with
    the bit count noised by ``sigma_b``, spends exactly what fixed clipping with ``z``
    does; 0 when ``z = 0`` (no privacy asked for). A :class:`ConfigError` naming
    ``algorithm.clipped_count_stddev`` when ``2 sigma_b <= z``: then no ``z_Delta`` does."""
    if noise_multiplier == 0:
        return 0.0
    if not 2 * count_stddev > noise_multiplier:
        raise ConfigError(
            f"algorithm.clipped_count_stddev: {count_stddev:g} is too small for noise_multiplier "
            f"{noise_multiplier:g}: adaptive clipping needs 2 * clipped_count_stddev > "
            "noise_multiplier, since the noised count spends privacy too (Andrew et al. 2021, "
            f"Theorem 1). Use a clipped_count_stddev above {noise_multiplier / 2:g} (the paper "
            "recommends the expected cohort / 20), a smaller noise_multiplier, or a larger cohort"
        )
    return float((noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5)


def count_stddev(configured: float | None, noise_multiplier: float | None, cohort: float) -> float:
    """``sigma_b``: as configured, else ``M / 20`` (0 without noise)."""
    if configured is not None:
        return configured
    return 0.0 if noise_multiplier == 0 else cohort * RECOMMENDED_COUNT_SHARE


def next_clip_norm(
    clip_norm: float,
    cohort: Cohort,
    info: RoundInfo,
    *,
    target_quantile: float,
    learning_rate: float,
    count_noise: float,
) -> float:
    """``S * exp(-eta_C (b~ - gamma))`` with ``b~ = (sum (b_k - 1/2) + N(0, sigma_b^2)) / M
    + 1/2``; the noise is drawn from the round's ``"dp_clip_count"`` stream."""
    expected = info.expected_cohort
    if expected is None:
        raise ValueError("adaptive clipping needs the expected cohort size M (RoundInfo)")
    if UNCLIPPED not in cohort.tallies:
        raise StageError(
            "adaptive clipping found no unclipped-count tally: its noise stage must follow the "
            "AdaptiveClip per-client stage (use dp_fedavg(target_quantile=...))"
        )
    centered = cohort.tallies[UNCLIPPED] - cohort.num_results / 2
    generator = info.private_generator("dp_clip_count")
    noise = float(torch.randn((), generator=generator, dtype=torch.float64))
    fraction = (centered + count_noise * noise) / expected + 0.5
    return clip_norm * math.exp(-learning_rate * (fraction - target_quantile))


@dataclass(frozen=True)
class AdaptiveClip(PerClient):
    """Clip every update to the current clip norm ``S_t`` and count it in the tally
    ``"adaptive_clip/unclipped"`` when it was within it; the state is ``{"clip_norm": S_t}``,
    moved by :func:`next_clip_norm` after every round.

    Attributes:
        initial_norm: ``S_0``.
        target_quantile: ``gamma``, the fraction of updates meant to stay unclipped.
        learning_rate: ``eta_C``; the norm moves by at most a factor ``exp(eta_C)`` a round.
        count_stddev: ``sigma_b``; ``None`` is ``M / 20`` (0 when ``noise_multiplier`` is 0).
        noise_multiplier: the run's overall ``z`` (for ``sigma_b``'s default only).
    """

    initial_norm: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_stddev: float | None = None
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        if not self.initial_norm > 0:
            raise ValueError(f"the initial clip norm must be > 0, got {self.initial_norm}")
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"the target quantile must be in (0, 1), got {self.target_quantile}")
        if not self.learning_rate > 0:
            raise ValueError(f"the clip learning rate must be > 0, got {self.learning_rate}")
        if self.count_stddev is not None and not self.count_stddev >= 0:
            raise ValueError(f"the clipped-count stddev must be >= 0, got {self.count_stddev}")

    @property
    def name(self) -> str:
        return "adaptive_clip"

    def init(self, params: torch.Tensor) -> dict[str, float]:
        return {"clip_norm": float(self.initial_norm)}

    def update(
        self, contribution: Contribution, state: dict[str, float], *, info: RoundInfo
    ) -> Contribution:
        clip_norm = state["clip_norm"]
        norm = row_distances(contribution.update[None])  # float64, [1]
        within = bool(norm <= clip_norm)
        tallies = {**contribution.tallies, UNCLIPPED: float(within), "clip/clipped": 1.0 - within}
        if within:
            return replace(contribution, tallies=tallies)
        factor = (clip_norm / norm).to(contribution.update.dtype)
        return replace(contribution, update=contribution.update * factor, tallies=tallies)

    def count_noise(self, info: RoundInfo) -> float:
        """``sigma_b`` for the round ``info`` describes."""
        expected = info.expected_cohort
        if expected is None:
            raise ValueError("adaptive clipping needs the expected cohort size M (RoundInfo)")
        return count_stddev(self.count_stddev, self.noise_multiplier, expected)

    def next_norm(self, clip_norm: float, cohort: Cohort, info: RoundInfo) -> float:
        return next_clip_norm(
            clip_norm,
            cohort,
            info,
            target_quantile=self.target_quantile,
            learning_rate=self.learning_rate,
            count_noise=self.count_noise(info),
        )

    def end_round(
        self, state: dict[str, float], cohort: Cohort, *, info: RoundInfo
    ) -> dict[str, float]:
        return {"clip_norm": self.next_norm(state["clip_norm"], cohort, info)}

    def metrics(self, state: dict[str, float]) -> dict[str, float]:
        """``dp_clip_norm``: the clip norm after the round (the next round's)."""
        return {"dp_clip_norm": state["clip_norm"]}


@dataclass(frozen=True)
class AdaptiveNoise:
    """DP-FedAvg's noise on the sum with the adaptive clip norm: std ``z_Delta * S_t``.

    ``noise`` is the fixed-clip stage with the run's overall ``z``: its ledger, ``dp_epsilon``
    and budget stop are exactly fixed clipping's (Theorem 1). This stage's state is that
    ledger plus ``"clip_norm"``: ``S_t``, moved as :class:`AdaptiveClip` moves its own.
    """

    noise: GaussianSumNoise
    clipping: AdaptiveClip
    name = "dp_noise"
    kind = "server"

    def update_multiplier(self, info: RoundInfo) -> float:
        """``z_Delta`` for the round ``info`` describes."""
        return update_noise(self.noise.z, self.clipping.count_noise(info))

    def stop_reason(self, state: dict[str, Any], info: RoundInfo) -> str | None:
        return self.noise.stop_reason(_ledger(state), info)

    def init(self, params: torch.Tensor) -> dict[str, Any]:
        return {**self.noise.init(params), "clip_norm": float(self.clipping.initial_norm)}

    def update(
        self,
        delta: torch.Tensor,
        state: dict[str, Any],
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]:
        clip_norm = state["clip_norm"]
        now = replace(
            self.noise, clip_norm=clip_norm, noise_multiplier=self.update_multiplier(info)
        )
        delta, ledger = now.update(delta, _ledger(state), cohort=cohort, params=params, info=info)
        return delta, {**ledger, "clip_norm": self.clipping.next_norm(clip_norm, cohort, info)}

    def metrics(self, state: dict[str, Any]) -> dict[str, float]:
        """``dp_epsilon``, as fixed clipping with the overall noise multiplier reports it."""
        return self.noise.metrics(_ledger(state))


def _ledger(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key != "clip_norm"}


def adaptive_clipping(
    noise: GaussianSumNoise,
    *,
    target_quantile: float,
    learning_rate: float,
    count_stddev: float | None,
) -> tuple[AdaptiveClip, AdaptiveNoise]:
    """DP-FedAvg's two adaptive stages around the fixed-clip noise stage ``noise`` (whose
    ``clip_norm`` is the initial norm); bad options are :class:`ConfigError`\\ s naming the
    ``algorithm`` field."""
    if not 0 < target_quantile < 1:
        raise ConfigError(f"algorithm.target_quantile: must be in (0, 1), got {target_quantile}")
    if not learning_rate > 0:
        raise ConfigError(f"algorithm.clip_learning_rate: must be > 0, got {learning_rate}")
    if count_stddev is not None:
        if not count_stddev >= 0:
            raise ConfigError(f"algorithm.clipped_count_stddev: must be >= 0, got {count_stddev}")
        if noise.noise_multiplier is not None:
            update_noise(noise.noise_multiplier, count_stddev)  # raises when too small
    clip = AdaptiveClip(
        noise.clip_norm, target_quantile, learning_rate, count_stddev, noise.noise_multiplier
    )
    return clip, AdaptiveNoise(noise, clip)


def check_cohort(stage: AdaptiveNoise, info: RoundInfo) -> None:
    """Raise the :class:`ConfigError` of :func:`update_noise` when the run's expected cohort
    ``M`` (through ``sigma_b``'s default ``M / 20``) leaves no ``z_Delta``: before round 1."""
    try:
        stage.update_multiplier(info)
    except ConfigError as exc:
        if stage.clipping.count_stddev is not None:
            raise
        raise ConfigError(
            f"{exc} (unset, clipped_count_stddev is the expected cohort "
            f"{info.expected_cohort:g} / 20)"
        ) from None
