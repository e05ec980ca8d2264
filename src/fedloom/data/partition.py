"""Partitioners: pure, seeded functions that split example indices across clients.

Each returns a list with one int64 index array per client. Every example goes to exactly one
client (checked by :func:`check_partition`), except with :func:`rare_class`, which keeps only
part of one class and leaves the rest of it out. Label-based partitioners take the label
array, size-based ones only the number of examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedloom.errors import DataError

__all__ = [
    "check_partition",
    "dirichlet",
    "iid",
    "natural",
    "quantity_skew",
    "rare_class",
    "shards",
]


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` that sum exactly to ``total``."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DataError(message)


def iid(num_examples: int, num_clients: int, *, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_clients`` parts whose sizes differ by at most one."""
    _require(
        num_examples >= num_clients,
        f"cannot give {num_clients} clients at least one of {num_examples} examples",
    )
    return [
        part.astype(np.int64) for part in np.array_split(rng.permutation(num_examples), num_clients)
    ]


def shards(
    labels: np.ndarray,
    num_clients: int,
    *,
    shards_per_client: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Pathological non-IID shards (McMahan et al. 2017, section 3).

    Examples are sorted by label and cut into ``num_clients * shards_per_client`` shards;
    each client receives ``shards_per_client`` shards at random. Unlike the paper, where a
    shard may straddle two labels, shards here are *label-pure*: each label's examples are cut
    into a number of shards proportional to its frequency (largest remainder), so a client
    holds at most ``shards_per_client`` labels, exactly. Shard sizes stay within a few
    examples of ``N / num_shards``.
    """
    num_shards = num_clients * shards_per_client
    classes, counts = np.unique(labels, return_counts=True)
    _require(shards_per_client >= 1, f"shards_per_client must be >= 1, got {shards_per_client}")
    _require(
        num_shards >= len(classes),
        f"label-pure shards need num_clients * shards_per_client >= the {len(classes)} labels, "
        f"got {num_shards}",
    )
    per_label = _largest_remainder(num_shards - len(classes), counts.astype(float)) + 1
    _require(
        bool(np.all(per_label <= counts)),
        f"{num_shards} shards are more than the examples of some label allow",
    )
    shard_list: list[np.ndarray] = []
    for label, count in zip(classes, per_label, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        shard_list.extend(np.array_split(members, count))
    order = rng.permutation(num_shards)
    return [
        np.sort(
            np.concatenate(
                [shard_list[s] for s in order[k * shards_per_client : (k + 1) * shards_per_client]]
            )
        ).astype(np.int64)
        for k in range(num_clients)
    ]


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Dirichlet label skew (Hsu, Qi and Brown 2019).

    Clients get equal sizes (within one example). Client k draws its label mix
    ``q_k ~ Dir(alpha * C * p)``, ``p`` the global label distribution over ``C`` labels, and
    takes ``n_k * q_k`` examples of each label (rounded by largest remainder), without
    replacement; when a label runs out, ``q_k`` is renormalized over the labels left. ``alpha -> inf`` approaches IID, ``alpha -> 0`` gives
    each client (nearly) a single label. With balanced labels the concentration is the usual
    ``Dir(alpha, ..., alpha)``; scaling by ``p`` keeps the expected mix equal to the global one
    when labels are imbalanced.
    """
    _require(alpha > 0, f"dirichlet alpha must be > 0, got {alpha}")
    num_examples = len(labels)
    _require(
        num_examples >= num_clients,
        f"cannot give {num_clients} clients at least one of {num_examples} examples",
    )
    classes, counts = np.unique(labels, return_counts=True)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    used = np.zeros(len(classes), dtype=np.int64)
    prior = counts / counts.sum()
    sizes = [len(part) for part in np.array_split(np.arange(num_examples), num_clients)]
    parts = []
    for size in sizes:
        mix = rng.dirichlet(alpha * len(classes) * prior)
        if not np.all(np.isfinite(mix)) or mix.sum() <= 0:  # all gamma draws underflowed
            mix = np.eye(len(classes))[rng.choice(len(classes), p=prior)]
        take = np.zeros(len(classes), dtype=np.int64)
        need = size
        while need > 0:
            available = counts - used - take
            weights = mix * (available > 0)
            if weights.sum() <= 0:
                weights = available.astype(float)
            draw = np.minimum(_largest_remainder(need, weights), available)
            take += draw
            need -= int(draw.sum())
        chosen = [pools[c][used[c] : used[c] + take[c]] for c in range(len(classes))]
        used += take
        parts.append(np.sort(np.concatenate(chosen)).astype(np.int64))
    return parts


def quantity_skew(
    num_examples: int,
    num_clients: int,
    *,
    sigma: float,
    min_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Unequal client sizes, IID labels: sizes ``min_size + LogNormal(0, sigma)`` shares.

    The ``num_examples - num_clients * min_size`` examples above the minimum are split in
    proportion to log-normal draws (largest remainder), so sizes sum exactly to the data.
    """
    _require(sigma >= 0, f"quantity sigma must be >= 0, got {sigma}")
    _require(min_size >= 1, f"quantity min_size must be >= 1, got {min_size}")
    spare = num_examples - num_clients * min_size
    _require(
        spare >= 0,
        f"{num_clients} clients x min_size {min_size} needs {num_clients * min_size} "
        f"examples but there are {num_examples}",
    )
    sizes = min_size + _largest_remainder(spare, rng.lognormal(0.0, sigma, num_clients))
    bounds = np.cumsum(sizes)[:-1]
    return [part.astype(np.int64) for part in np.split(rng.permutation(num_examples), bounds)]


def rare_class(
    labels: np.ndarray,
    num_clients: int,
    *,
    rare_class: int,
    prevalence: float,
    alpha: float,
    rest_alpha: float | None = None,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """One class made rare overall and spread unevenly (rare events: seismic, fraud).

    The examples of every other class are split first: IID (equal sizes), or with
    Dirichlet label skew of concentration ``rest_alpha`` (:func:`dirichlet`). Of class
    ``rare_class`` only ``m = round(prevalence * n_rest / (1 - prevalence))`` examples are
    kept, chosen at random, so that it makes up ``prevalence`` of the partitioned data; they
    go to clients in proportions ``~ Dir(alpha, ..., alpha)`` (largest remainder). Small
    ``alpha`` puts them on a few clients (most clients never see the rare class), large
    ``alpha`` spreads them evenly. The other examples of the rare class are left out of
    every client: the partition is not exhaustive.
    """
    _require(0 < prevalence < 1, f"rare_class prevalence must be in (0, 1), got {prevalence}")
    _require(alpha > 0, f"rare_class alpha must be > 0, got {alpha}")
    rare = np.flatnonzero(labels == rare_class)
    rest = np.flatnonzero(labels != rare_class)
    _require(
        len(rare) > 0, f"rare_class {rare_class} has no examples (labels: {np.unique(labels)})"
    )
    keep = int(round(prevalence * len(rest) / (1 - prevalence)))
    most = len(rare) / (len(rare) + len(rest))
    _require(
        1 <= keep <= len(rare),
        f"prevalence {prevalence} of class {rare_class} needs {keep} of its examples but it has "
        f"{len(rare)}; choose a prevalence in ({1 / (1 + len(rest)):.2g}, {most:.3g}]",
    )
    if rest_alpha is None:
        rest_parts = iid(len(rest), num_clients, rng=rng)
    else:
        rest_parts = dirichlet(labels[rest], num_clients, alpha=rest_alpha, rng=rng)
    shares = rng.dirichlet(np.full(num_clients, float(alpha)))
    if not np.all(np.isfinite(shares)) or shares.sum() <= 0:  # all gamma draws underflowed
        shares = np.eye(num_clients)[rng.integers(num_clients)]
    counts = _largest_remainder(keep, shares)
    kept = np.split(rng.permutation(rare)[:keep], np.cumsum(counts)[:-1])
    return [
        np.sort(np.concatenate([rest[part], own])).astype(np.int64)
        for part, own in zip(rest_parts, kept, strict=True)
    ]


def natural(owners: np.ndarray) -> list[np.ndarray]:
    """One client per distinct owner id (device, writer, silo), in sorted id order."""
    ids = np.unique(owners)
    return [np.flatnonzero(owners == owner).astype(np.int64) for owner in ids]


def check_partition(
    parts: Sequence[np.ndarray], num_examples: int, *, exhaustive: bool = True
) -> None:
    """Raise :class:`DataError` unless every example is in exactly one part (in at most
    one, when the partition need not be ``exhaustive``)."""
    counts = np.bincount(np.concatenate(parts), minlength=num_examples) if parts else np.zeros(0)
    allowed = (counts == 1) | (counts == 0) if not exhaustive else counts == 1
    if len(counts) != num_examples or not np.all(allowed):
        missing = int(np.sum(counts == 0))
        repeated = int(np.sum(counts > 1))
        raise DataError(
            f"partition is not exact: {missing} examples unassigned, {repeated} assigned twice"
        )
