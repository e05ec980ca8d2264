"""Who masks with whom: the complete graph (Bonawitz et al. 2017) or SecAgg+'s sparse one.

In SecAgg+ (Bell et al. 2020, "Secure single-server aggregation with (poly)logarithmic
overhead") each client agrees masks with, and sends shares to, only its ``k`` neighbors in a
random ``k``-regular graph, so its cost grows with ``k`` (logarithmic in the cohort for their
security bounds) instead of with the cohort. The graph here is the construction of their
section 3.1: a Harary graph ``H(n, k)`` (clients on a ring, each joined to the ``k / 2``
nearest on either side) with the clients placed on the ring in a random order.

The order is a seeded permutation derived by :mod:`fedloom.rng` from (run seed, round,
cohort), so the server and every client compute the same graph without a message, and each
round gets a fresh one. The seed is public: the graph hides nothing, and against an
honest-but-curious server it need not (the server may know who neighbors whom).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.errors import ConfigError
from fedloom.rng import numpy_rng

__all__ = ["neighbor_graph"]


def neighbor_graph(
    cohort_ids: Sequence[int], *, neighbors: int | None, seed: int, round: int
) -> dict[int, frozenset[int]]:
    """Each client's neighbors (never itself). ``neighbors=None``, or at least ``n - 1``,
    gives the complete graph; otherwise ``neighbors`` must be even (``k / 2`` per side).

    >>> graph = neighbor_graph(range(10), neighbors=4, seed=0, round=1)
    >>> sorted(len(peers) for peers in graph.values()) == [4] * 10
    True
    """
    cohort = sorted(cohort_ids)
    if len(set(cohort)) != len(cohort):
        raise ValueError(f"cohort ids must be distinct, got {list(cohort_ids)}")
    n = len(cohort)
    if neighbors is None or neighbors >= n - 1:
        everyone = frozenset(cohort)
        return {client: everyone - {client} for client in cohort}
    if neighbors < 2 or neighbors % 2:
        raise ConfigError(
            f"secure_aggregation.neighbors must be an even number >= 2 (k / 2 neighbors on "
            f"each side of a ring), or null for all, got {neighbors}"
        )
    order = numpy_rng(seed, "secagg/graph", round, *cohort).permutation(n)
    ring = [cohort[int(i)] for i in order]
    half = neighbors // 2
    return {
        ring[i]: frozenset(ring[(i + d) % n] for d in range(-half, half + 1) if d != 0)
        for i in range(n)
    }
