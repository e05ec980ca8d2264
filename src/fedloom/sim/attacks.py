"""Simulated attacks by a fixed fraction of malicious clients.

Model poisoning replaces a malicious client's update after its local training:

- ``scaling``: boost the update by ``factor`` (model replacement, Bagdasaryan et al. 2020);
- ``sign_flip``: send ``-update``;
- ``gaussian``: send ``N(0, sigma^2 I)`` noise instead of an update;
- ``alie``, "a little is enough" (Baruch et al. 2019): every attacker sends
  ``mu - z sigma``, coordinate-wise, from the mean and std of the benign updates; ``z`` by
  default from the paper: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)``;
- ``ipm``, inner-product manipulation (Xie et al. 2020): every attacker sends
  ``-epsilon * mu``, so the aggregate's inner product with the true direction turns negative.

Data poisoning flips labels before training: ``label_flip`` maps label ``y`` to ``C - 1 - y``
on the malicious clients' training examples (their held-out examples stay clean).

Collusion: with ``omniscient`` (the default) ALIE and IPM see the honest updates of the round,
as in the papers' strongest setting; otherwise the attackers use their own benign updates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedloom.client import LocalContext
from fedloom.data import FederatedDataset
from fedloom.engine import Executor
from fedloom.rng import numpy_rng, torch_generator
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackedExecutor",
    "alie_z",
    "choose_attackers",
    "flip_labels",
]

ATTACKS = ("none", "scaling", "sign_flip", "gaussian", "alie", "ipm", "label_flip")


@dataclass(frozen=True)
class Attack:
    """Which attack, on what fraction of the clients, with its parameters."""

    kind: str = "none"
    fraction: float = 0.0
    factor: float = 100.0
    sigma: float = 1.0
    z: float | None = None
    epsilon: float = 0.5
    omniscient: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack {self.kind!r}; use one of {', '.join(ATTACKS)}")
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"attack fraction must be in [0, 1], got {self.fraction}")
        if self.sigma < 0:
            raise ValueError(f"gaussian attack sigma must be >= 0, got {self.sigma}")

    @property
    def poisons_data(self) -> bool:
        return self.kind == "label_flip"

    @property
    def poisons_updates(self) -> bool:
        return self.kind not in ("none", "label_flip") and self.fraction > 0


def choose_attackers(num_clients: int, fraction: float, *, seed: int) -> frozenset[int]:
    """Exactly ``round(fraction * K)`` malicious clients, fixed for the run."""
    count = round(fraction * num_clients)
    chosen = numpy_rng(seed, "attackers").choice(num_clients, size=count, replace=False)
    return frozenset(int(c) for c in chosen)


def flip_labels(
    data: FederatedDataset, attackers: frozenset[int], num_classes: int
) -> FederatedDataset:
    """A copy of ``data`` whose attackers' training labels are ``C - 1 - y``."""
    if not attackers:
        return data
    labels = data.dataset.train_y.clone()
    index = torch.from_numpy(np.concatenate([data.client_train[k] for k in sorted(attackers)]))
    labels[index] = num_classes - 1 - labels[index]
    return replace(data, dataset=replace(data.dataset, train_y=labels))


def alie_z(num_participants: int, num_attackers: int) -> float:
    """Baruch et al.'s ``z_max``: ``s = floor(n/2 + 1) - f``, ``Phi^-1((n - s) / n)``."""
    n, f = num_participants, num_attackers
    s = math.floor(n / 2 + 1) - f
    share = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return statistics.NormalDist().inv_cdf(share)


def poison_updates(
    attack: Attack,
    own: torch.Tensor,
    reference: torch.Tensor,
    *,
    num_participants: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The malicious updates (``[f, P]``) for the attackers' own ``[f, P]`` updates, given
    the ``[H, P]`` reference updates (honest ones when omniscient)."""
    f = own.shape[0]
    if attack.kind == "scaling":
        return own * attack.factor
    if attack.kind == "sign_flip":
        return -own
    if attack.kind == "gaussian":
        return torch.randn(own.shape, generator=generator) * attack.sigma
    mean = reference.mean(0)
    if attack.kind == "alie":
        std = reference.std(0, correction=0) if len(reference) > 1 else torch.zeros_like(mean)
        z = attack.z if attack.z is not None else alie_z(num_participants, f)
        return (mean - z * std).expand(f, -1).clone()
    if attack.kind == "ipm":
        return (-attack.epsilon * mean).expand(f, -1).clone()
    raise ValueError(f"attack {attack.kind!r} does not poison updates")


class AttackedExecutor:
    """Wraps an executor: its malicious clients' results are replaced by poisoned ones.

    The round loop and the aggregator cannot tell them apart, as on a real network.
    """

    def __init__(self, inner: Executor, attack: Attack, attackers: frozenset[int], *, seed: int):
        self.inner, self.attack, self.attackers, self.seed = inner, attack, attackers, seed

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        outcomes = self.inner.fit(plans, params, buffers, context)
        if not self.attack.poisons_updates:
            return outcomes
        trained = [o for o in outcomes if isinstance(o, ClientResult)]
        bad = [o for o in trained if o.client_id in self.attackers]
        if not bad:
            return outcomes
        honest = [o for o in trained if o.client_id not in self.attackers]
        own = torch.stack([o.update for o in bad])
        if self.attack.omniscient and honest:
            reference = torch.stack([o.update for o in honest])
        else:
            reference = own
        round_ = plans[0].round if plans else 0
        generator = torch_generator(self.seed, "attack", round_)
        poisoned = poison_updates(
            self.attack, own, reference, num_participants=len(trained), generator=generator
        )
        replacement = {o.client_id: p for o, p in zip(bad, poisoned, strict=True)}
        return [
            replace(o, update=replacement[o.client_id])
            if isinstance(o, ClientResult) and o.client_id in replacement
            else o
            for o in outcomes
        ]

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
