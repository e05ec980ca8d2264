"""Hierarchical aggregation: clients under edge aggregators, edges under the server.

A tree of :class:`Group` nodes of any depth; each node combines its members (clients or
subgroups) with its own aggregator and passes one update up, weighted by the total weight
of the clients beneath it. With the weighted mean at every node the result is exactly the
flat weighted mean:

    sum_e P_e * (sum_{k in e} (p_k / P_e) u_k) = sum_k p_k u_k,   P_e = sum_{k in e} p_k.

Robust rules may sit at any level: a median at the edges contains attackers inside an edge;
a median at the root contains an edge that is compromised as a whole. Nodes with no
participant in a round are left out of their parent's aggregate. Rules with memory across
rounds (centered clipping) start fresh at every node each round inside a tree.

The tree is one stacked reducer of the pipeline (it needs every update and its client id);
per-client stages (clipping) act before it, aggregate stages after its root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fedloom.aggregate.mean import Mean
from fedloom.aggregate.stacked import Stacked, StackRule

__all__ = ["Group", "Hierarchical", "contiguous_tree"]


@dataclass(frozen=True)
class Group:
    """A node: its members (client ids or subgroups) and the rule that combines them."""

    members: tuple[int | Group, ...]
    aggregator: StackRule = field(default_factory=Mean)

    def clients(self) -> list[int]:
        """Every client id beneath this node."""
        found: list[int] = []
        for member in self.members:
            found.extend(member.clients() if isinstance(member, Group) else [member])
        return found


@dataclass(frozen=True)
class Hierarchical(Stacked):
    """Aggregate up the tree rooted at ``root``; every client must appear exactly once."""

    root: Group = field(default_factory=lambda: Group(()))

    def __post_init__(self) -> None:
        clients = self.root.clients()
        if len(set(clients)) != len(clients):
            repeated = sorted({c for c in clients if clients.count(c) > 1})
            raise ValueError(f"clients {repeated[:10]} appear more than once in the tree")

    @property
    def name(self) -> str:
        return "Hierarchical"

    def aggregate(
        self,
        updates: torch.Tensor,
        weights: torch.Tensor,
        state: Any,
        client_ids: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        if client_ids is None or len(client_ids) != updates.shape[0]:
            raise ValueError("hierarchical aggregation needs the client id of every update")
        rows = {int(c): i for i, c in enumerate(client_ids)}
        missing = sorted(set(rows) - set(self.root.clients()))
        if missing:
            raise ValueError(f"clients {missing[:10]} are not in the aggregation tree")
        combined = self._node(self.root, updates, weights.double(), rows, "root")
        if combined is None:
            raise ValueError("no update reached the root of the aggregation tree")
        return combined[0], state

    def _node(
        self,
        group: Group,
        updates: torch.Tensor,
        weights: torch.Tensor,
        rows: dict[int, int],
        path: str,
    ) -> tuple[torch.Tensor, float] | None:
        vectors: list[torch.Tensor] = []
        totals: list[float] = []
        for position, member in enumerate(group.members):
            if isinstance(member, Group):
                child = self._node(member, updates, weights, rows, f"{path}/{position}")
                if child is not None:
                    vectors.append(child[0])
                    totals.append(child[1])
            elif member in rows:
                vectors.append(updates[rows[member]])
                totals.append(float(weights[rows[member]]))
        if not vectors:
            return None
        needed = group.aggregator.min_updates()
        if len(vectors) < needed:
            raise ValueError(
                f"node {path} ({group.aggregator.name}) got {len(vectors)} inputs this round, "
                f"needs {needed}"
            )
        total = sum(totals)
        node_weights = torch.tensor(totals, dtype=torch.float64) / total
        stacked = torch.stack(vectors)
        return group.aggregator(stacked, node_weights.to(stacked.dtype)), total


def contiguous_tree(
    num_clients: int, branching: Sequence[int], aggregators: Sequence[StackRule] | None = None
) -> Group:
    """A tree over clients ``0..K-1``: blocks of ``branching[0]`` clients under each edge,
    blocks of ``branching[1]`` edges under each next-level node, ..., one root.

    ``aggregators[i]`` is the rule at level ``i`` (0: the edges; the last: the root;
    default: the mean everywhere).
    """
    depth = len(branching) + 1
    rules: list[StackRule] = list(aggregators) if aggregators is not None else [Mean()] * depth
    if len(rules) != depth:
        raise ValueError(f"need {depth} aggregators (one per level, root last), got {len(rules)}")
    if any(b < 1 for b in branching):
        raise ValueError(f"branching factors must be >= 1, got {list(branching)}")
    level: list[int | Group] = list(range(num_clients))
    for size, rule in zip(branching, rules, strict=False):
        level = [Group(tuple(level[i : i + size]), rule) for i in range(0, len(level), size)]
    return Group(tuple(level), rules[-1])
