"""Secure aggregation as the reducer of the aggregation pipeline, in simulation.

:class:`SecureSum` takes the place of FedAvg's weighted mean (``Mean``) or DP-FedAvg's sum
(``Sum``). It folds the cohort's contributions as they arrive (after the weighting and the
per-client stages, which a real client runs on its own update before masking it), and at
the end of the round runs the *whole* protocol over them with :func:`simulate_round`: key
agreement, Shamir sharing, masking, (simulated) dropouts, unmasking. What comes out is only
the decoded sum, so the costs in time and bytes are the protocol's own.

Weights: client ``k`` sends ``w_k * u_k`` (its weight times its update after the per-client
stages) as the vector and ``w_k`` as the count coordinate, so the server learns
``sum_k w_k u_k`` and ``sum_k w_k`` over the survivors. With ``mean`` (FedAvg's rule) the
step is their ratio; without (DP-FedAvg, uniform weights) it is the sum itself, and the noise
stage that follows divides by the expected cohort. Weights must be whole numbers (example
counts, or 1): the count coordinate is summed exactly in the group.

``clip_range`` bounds every coordinate of what a client sends, ``w_k * u_k``: with example
weighting that is ``n_k`` times the update. Coordinates beyond it are clipped (a bias, not an
error): the stage counts them and the round reports ``secagg_clipped`` (the fraction of
clipped coordinates); raise ``clip_range`` if it is not 0.

Error bound, per coordinate of the step: ``|secure - plain| <= S * step_q / W`` for the mean
and ``<= S * step_q`` for the sum, where ``S`` is the number of survivors, ``step_q = 2 c /
(2^value_bits - 1)`` the quantization step and ``W`` the survivors' total weight
(:meth:`SecureSum.error_bound`); plus float32 rounding of the result.

Dropouts (simulated): each round a fraction of the cohort, drawn from the run seed and the
round, stops after the phase ``dropout_after``. Dropping after ``advertise`` or ``share``
leaves the client out of the sum (the server reconstructs its pairwise masks); after
``masked_input`` its input is in the sum (the server reconstructs its self-mask). With more
than ``n - t`` dropouts the protocol aborts: the stage raises
:class:`~fedloom.errors.RoundAborted` and the round loop skips the round, model unchanged.

Per round the stage's state holds what the round cost (its ``metrics``, prefixed
``secagg_``): ``in_sum`` (clients whose input is in the sum), ``dropped`` (clients that
stopped before the end of the protocol, in the sum or not), ``clipped``, bytes up and down per
client, mean seconds in one client's code and seconds in the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedloom.aggregate import Contribution, RoundInfo
from fedloom.errors import RoundAborted, StageError
from fedloom.privacy.secagg.config import SecAggConfig
from fedloom.privacy.secagg.errors import SecAggAborted
from fedloom.privacy.secagg.messages import Phase
from fedloom.privacy.secagg.simulate import RoundTrace, simulate_round
from fedloom.rng import numpy_rng

__all__ = ["DROPOUT_PHASES", "SecureSum"]

log = logging.getLogger("fedloom")

DROPOUT_PHASES = {
    "advertise": Phase.ADVERTISE,
    "share": Phase.SHARE,
    "masked_input": Phase.MASKED,
}
"""``dropout_after`` names: the last message a dropped client sends."""

_EMPTY_STATS = {
    "in_sum": 0.0,
    "dropped": 0.0,
    "clipped": 0.0,
    "bytes_up_per_client": 0.0,
    "bytes_down_per_client": 0.0,
    "client_s": 0.0,
    "server_s": 0.0,
}

Folded = list[tuple[int, torch.Tensor, int]]
"""The round's contributions: ``(client id, update [P], whole weight)``."""


class _Weighted(Mapping[int, np.ndarray]):
    """``client id -> w_k * u_k`` (float64), computed when the protocol asks for it, so the
    round holds the float32 updates once and one float64 vector at a time."""

    def __init__(self, folded: Folded):
        self._items = {c: (u, w) for c, u, w in folded}

    def __getitem__(self, client_id: int) -> np.ndarray:
        update, weight = self._items[client_id]
        return update.double().numpy() * weight

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class SecureSum:
    """The pipeline's reducer under secure aggregation (see the module doc)."""

    config: SecAggConfig
    mean: bool = True
    dropout_fraction: float = 0.0
    dropout_after: str = "share"
    kind = "reduce"
    stacks = False  # it keeps the round's updates (K x P float32), but allocates no stack

    def __post_init__(self) -> None:
        if self.dropout_after not in DROPOUT_PHASES:
            raise ValueError(
                f"dropout_after must be one of {', '.join(DROPOUT_PHASES)}, "
                f"got {self.dropout_after!r}"
            )
        if not 0.0 <= self.dropout_fraction < 1.0:
            raise ValueError(f"dropout_fraction must be in [0, 1), got {self.dropout_fraction}")

    @property
    def name(self) -> str:
        return "secure_mean" if self.mean else "secure_sum"

    def init(self, params: torch.Tensor) -> dict[str, float]:
        return dict(_EMPTY_STATS)

    def min_updates(self) -> int:
        return max(2, self.config.threshold or 2)

    def start(self, params: torch.Tensor, *, expected: int | None = None) -> Folded:
        return []

    def fold(self, acc: Folded, contribution: Contribution) -> Folded:
        weight = contribution.weight
        if not (float(weight).is_integer() and weight >= 0):
            raise StageError(
                f"{self.name}: client {contribution.client_id}'s weight is {weight!r}; secure "
                "aggregation sums the weights exactly as whole numbers (example counts or 1): "
                "use server.weighting examples or uniform"
            )
        acc.append((contribution.client_id, contribution.update, int(weight)))
        return acc

    def dropouts(self, cohort: list[int], info: RoundInfo) -> dict[int, Phase]:
        """The clients that drop out of this round's protocol, and after which phase."""
        count = round(self.dropout_fraction * len(cohort))
        if count == 0:
            return {}
        rng = numpy_rng(info.seed, "secagg/dropout", info.round)
        chosen = rng.choice(np.asarray(cohort), size=count, replace=False)
        return dict.fromkeys((int(c) for c in chosen), DROPOUT_PHASES[self.dropout_after])

    def error_bound(self, num_survivors: int, total_weight: float, num_clients: int) -> float:
        """The per-coordinate bound on ``|secure step - plain step|`` (before float32
        rounding) for ``num_survivors`` survivors of total weight ``total_weight`` in a cohort
        of ``num_clients``."""
        step = self.config.for_cohort(num_clients).quantizer.step
        bound = num_survivors * step
        return bound / total_weight if self.mean else bound

    def finish(self, acc: Folded, state: Any, *, info: RoundInfo) -> tuple[torch.Tensor, Any]:
        cohort = sorted(c for c, _, _ in acc)
        n = len(cohort)
        if len(set(cohort)) != n:
            raise StageError(f"{self.name}: a client contributed twice in one round")
        t = self.config.threshold
        if n < 2 or (t is not None and t > self._holders(n)):
            raise RoundAborted(
                f"secure aggregation needs at least {max(2, t or 2)} clients' updates, "
                f"{n} reached the aggregation"
            )
        params = self.config.for_cohort(n)
        counts = {c: w for c, _, w in acc}
        too_big = {c: w for c, w in counts.items() if w > params.max_count}
        if too_big:
            raise StageError(
                f"{self.name}: weights {too_big} exceed {params.max_count}, the most one of "
                f"{n} clients may send in {params.bits} bits; raise "
                "server.secure_aggregation.bits"
            )
        updates = _Weighted(acc)
        num_params = acc[0][1].numel()
        clip = params.quantizer.clip_range
        clipped = sum(
            int(np.count_nonzero(np.abs(updates[c]) > clip)) for c in cohort
        )  # each client can count its own: the server learns only this total
        if clipped:
            log.warning(
                "round %d: secure aggregation clipped %d of the %d coordinates the clients "
                "sent to [-%g, %g] (the weighted updates w_k u_k are larger): the mean is "
                "biased; raise server.secure_aggregation.clip_range",
                info.round + 1,
                clipped,
                n * num_params,
                clip,
                clip,
            )
        trace = RoundTrace()
        drop_after = self.dropouts(cohort, info)
        try:
            result = simulate_round(
                self.config,
                updates,
                counts,
                seed=info.seed,
                round=info.round,
                drop_after=drop_after,
                trace=trace,
            )
        except SecAggAborted as exc:
            raise RoundAborted(str(exc)) from exc
        total = np.asarray(result.sum, dtype=np.float64)
        if self.mean:
            if result.num_examples <= 0:
                raise RoundAborted(
                    f"secure aggregation of round {info.round}: the survivors' weights sum to "
                    f"{result.num_examples}; the mean needs a positive total"
                )
            total = total / result.num_examples
        stats = {
            "in_sum": float(len(result.survivor_ids)),
            "dropped": float(len(drop_after)),
            "clipped": clipped / float(n * num_params),
            "bytes_up_per_client": sum(trace.bytes_up.values()) / n,
            "bytes_down_per_client": sum(trace.bytes_down.values()) / n,
            "client_s": sum(trace.client_s.values()) / n,
            "server_s": trace.server_s,
        }
        return torch.from_numpy(total).to(torch.float32), stats

    def metrics(self, stats: Mapping[str, float]) -> dict[str, float]:
        """The last round's protocol numbers, prefixed ``secagg_``."""
        return {f"secagg_{key}": float(value) for key, value in stats.items()}

    def _holders(self, n: int) -> int:
        k = self.config.neighbors
        return n if k is None else min(k, n - 1) + 1
