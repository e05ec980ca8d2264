"""The client-state store: what the server keeps for each client between rounds.

SCAFFOLD's control variate ``c_k`` today; personal heads, Ditto's personal models and EWC's
Fisher diagonals next. State is a plain value: a mapping from client id to the client's named
tensors (``{7: {"scaffold/c": tensor}}``), held in :class:`~fedloom.algorithms.ServerState`
and checkpointed with it. Algorithms never mutate it: they read a client's entries with
:func:`client_state` and return their writes, which :func:`with_writes` merges into a new
value after the round succeeded (so a failed round leaves every client's state as it was).
For populations whose state does not fit in memory the store spills to disk
(:class:`~fedloom.client.spill.SpilledClientStates`, config ``server.client_state: disk``).
Names are namespaced by the algorithm (``"scaffold/c"``) so that composed algorithms do not
collide. Clients that never took part have no entry: each algorithm says what that means
(SCAFFOLD: ``c_k = 0``).

In deployment each client keeps its own entries (:class:`OwnState`, optionally in a file
that survives restarts), and the server keeps none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from fedloom.storage import read_tensors, write_tensors

__all__ = ["ClientStates", "OwnState", "client_state", "with_writes"]

ClientStates = Mapping[int, Mapping[str, torch.Tensor]]
"""Each client's named tensors, by client id."""


def client_state(states: ClientStates, client_id: int, name: str) -> torch.Tensor | None:
    """Client ``client_id``'s tensor ``name``, or ``None`` if it has none yet."""
    return states.get(client_id, {}).get(name)


def with_writes(
    states: ClientStates, writes: Mapping[int, Mapping[str, torch.Tensor]]
) -> ClientStates:
    """A new store value with ``writes`` merged in; ``states`` is left untouched. A store
    with its own ``with_writes`` (the spilled one, :mod:`fedloom.client.spill`) does it.

    >>> s = with_writes({}, {3: {"a/x": torch.ones(1)}})
    >>> sorted(with_writes(s, {3: {"a/y": torch.zeros(1)}})[3])
    ['a/x', 'a/y']
    """
    own = getattr(states, "with_writes", None)
    if own is not None:
        return own(writes)
    merged = {client: dict(entries) for client, entries in states.items()}
    for client, entries in writes.items():
        merged.setdefault(client, {}).update(entries)
    return merged


class OwnState:
    """A deployed client's own entries: in memory, and in ``path`` when one is given.

    The file is read at start (so a restarted client continues with its ``c_k``) and
    rewritten atomically after every accepted update.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, torch.Tensor] = {}
        if self.path is not None and self.path.exists():
            self.entries, _ = read_tensors(self.path, what="client state file")

    def commit(self, writes: Mapping[str, torch.Tensor]) -> None:
        """Merge ``writes`` in and persist them."""
        if not writes:
            return
        self.entries = {**self.entries, **writes}
        if self.path is not None:
            write_tensors(self.path, self.entries, {"format": "fedloom-client-state-v1"})
