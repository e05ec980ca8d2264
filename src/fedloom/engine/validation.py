"""Update validation: every client result is checked before it can touch the global model.

The same checks run in simulation and on the networked server. A rejected update is dropped
with its client id and reason (logged and counted in the round's metrics); it never reaches
the aggregator. A round left with too few valid updates is skipped and the model stays as
it was.

Checks, in order (the first failure is the reason):

1. the update is a float32 tensor of shape ``[P]`` (and buffers ``[Q]``);
2. every value of the update, the buffers and the reported statistics is finite;
3. the example count is a positive integer, at most ``max_examples`` when set, and equal to
   the count the server knows for that client when it knows one (``known_examples``);
4. the step count is a positive integer;
5. the update's L2 norm is at most ``max_norm`` when set.

Then, over the round's updates that passed (:func:`validate_updates`), two checks relative
to the round itself, which need no absolute bound chosen in advance and are on by default in
deployment (``docs/RELIABILITY.md``):

6. an update whose norm exceeds ``max_norm_ratio`` times the round's median norm is
   rejected (one insider's huge update cannot dominate the mean);
7. an example count above ``max_examples_ratio`` times the round's median count is capped
   there (a client claiming a million examples gets at most that multiple of a typical
   client's weight).

With a handful of clients the median is only as robust as the honest majority: with two
clients, one attacker moves it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from fedloom.types import ClientResult

__all__ = ["Rejection", "UpdatePolicy", "check_update", "validate_updates"]

log = logging.getLogger("fedloom")


@dataclass(frozen=True)
class UpdatePolicy:
    """What counts as a valid update, and how many a round needs.

    Attributes:
        max_norm: reject updates whose L2 norm exceeds this (``None``: no bound).
        max_examples: reject claims of more examples than this (``None``: no bound).
        min_updates: skip the round when fewer valid updates remain (the aggregator may
            need more: Krum needs ``2f + 3``).
        max_norm_ratio: reject updates whose norm exceeds this multiple of the round's
            median norm (``None``: no such check).
        max_examples_ratio: cap example counts at this multiple of the round's median
            count (``None``: no cap).
    """

    max_norm: float | None = None
    max_examples: int | None = None
    min_updates: int = 1
    max_norm_ratio: float | None = None
    max_examples_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {self.max_norm}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {self.max_examples}")
        if self.min_updates < 1:
            raise ValueError(f"min_updates must be >= 1, got {self.min_updates}")
        for name in ("max_norm_ratio", "max_examples_ratio"):
            value = getattr(self, name)
            if value is not None and not value > 1:
                raise ValueError(f"{name} must be > 1, got {value}")


@dataclass(frozen=True)
class Rejection:
    """A rejected update: whose, and why."""

    client_id: int
    reason: str


def _tensor_problem(name: str, value: object, size: int) -> str | None:
    if not isinstance(value, torch.Tensor):
        return f"{name} is a {type(value).__name__}, not a tensor"
    if value.dtype != torch.float32:
        return f"{name} has dtype {value.dtype}, expected torch.float32"
    if tuple(value.shape) != (size,):
        return f"{name} has shape {tuple(value.shape)}, expected ({size},)"
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        return f"{name} has {bad} non-finite values (NaN or inf)"
    return None


def check_update(
    result: ClientResult,
    *,
    num_params: int,
    num_buffers: int,
    policy: UpdatePolicy,
    known_examples: int | None = None,
) -> str | None:
    """Why ``result`` must be rejected, or ``None`` when it is valid."""
    problem = _tensor_problem("update", result.update, num_params)
    problem = problem or _tensor_problem("buffers", result.buffers, num_buffers)
    for name, tensor in (result.state_report or {}).items():
        problem = problem or _tensor_problem(f"state report {name!r}", tensor, num_params)
    if problem:
        return problem
    for key, value in result.statistics.items():
        if not isinstance(value, float | int) or not math.isfinite(value):
            return f"statistic {key!r} is {value!r}, not a finite number"
    n = result.num_examples
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"example count {n!r} is not a positive integer"
    if policy.max_examples is not None and n > policy.max_examples:
        return f"example count {n} exceeds the plausible maximum {policy.max_examples}"
    if known_examples is not None and n != known_examples:
        return f"example count {n} differs from the client's known {known_examples}"
    steps = result.num_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        return f"step count {steps!r} is not a positive integer"
    if policy.max_norm is not None:
        norm = float(result.update.double().norm())
        if norm > policy.max_norm:
            return f"update norm {norm:.4g} exceeds the bound {policy.max_norm:.4g}"
    return None


def validate_updates(
    results: Sequence[ClientResult],
    *,
    num_params: int,
    num_buffers: int,
    policy: UpdatePolicy,
    known_examples: Mapping[int, int] | None = None,
) -> tuple[list[ClientResult], list[Rejection]]:
    """``(valid results, rejections)``; a client appearing twice keeps only its first."""
    valid: list[ClientResult] = []
    rejected: list[Rejection] = []
    seen: set[int] = set()
    for result in results:
        if result.client_id in seen:
            rejected.append(Rejection(result.client_id, "a second update in the same round"))
            continue
        seen.add(result.client_id)
        reason = check_update(
            result,
            num_params=num_params,
            num_buffers=num_buffers,
            policy=policy,
            known_examples=(known_examples or {}).get(result.client_id),
        )
        if reason is None:
            valid.append(result)
        else:
            rejected.append(Rejection(result.client_id, reason))
    if policy.max_norm_ratio is not None and valid:
        valid, outliers = _reject_norm_outliers(valid, policy.max_norm_ratio)
        rejected.extend(outliers)
    if policy.max_examples_ratio is not None and valid:
        valid = _cap_example_counts(valid, policy.max_examples_ratio)
    return valid, rejected


def _median(values: Sequence[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median())  # the lower middle


def _reject_norm_outliers(
    results: list[ClientResult], ratio: float
) -> tuple[list[ClientResult], list[Rejection]]:
    norms = [float(r.update.double().norm()) for r in results]
    bound = ratio * _median(norms)
    if bound <= 0:
        return results, []
    kept = [r for r, n in zip(results, norms, strict=True) if n <= bound]
    outliers = [
        Rejection(
            r.client_id,
            f"update norm {n:.4g} exceeds {ratio:g} x the round's median norm ({bound:.4g})",
        )  # fmt: skip
        for r, n in zip(results, norms, strict=True)
        if n > bound
    ]
    return kept, outliers


def _cap_example_counts(results: list[ClientResult], ratio: float) -> list[ClientResult]:
    cap = max(int(ratio * _median([r.num_examples for r in results])), 1)
    capped = []
    for r in results:
        if r.num_examples > cap:
            log.warning(
                "client %d claims %d examples, over %g x the round's median: its weight is "
                "capped at %d", r.client_id, r.num_examples, ratio, cap,
            )  # fmt: skip
            r = replace(r, num_examples=cap)
        capped.append(r)
    return capped
