"""The client-state store: what the server keeps for each client between rounds.

SCAFFOLD's control variate ``c_k`` today; personal heads, Ditto's personal models and EWC's
Fisher diagonals next. State is a plain value: a mapping from client id to the client's named
tensors (``{7: {"scaffold/c": tensor}}``), held in :class:`~fedloom.algorithms.ServerState`
and checkpointed with it. Algorithms never mutate it: they read a client's entries with
:func:`client_state` and return their writes, which :func:`with_writes` merges into a new
value after the round succeeded (so a failed round leaves every client's state as it was).
Names are namespaced by the algorithm (``"scaffold/c"``) so that composed algorithms do not
collide. Clients that never took part have no entry: each algorithm says what that means
(SCAFFOLD: ``c_k = 0``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["ClientStates", "client_state", "with_writes"]

ClientStates = Mapping[int, Mapping[str, torch.Tensor]]
"""Each client's named tensors, by client id."""


def client_state(states: ClientStates, client_id: int, name: str) -> torch.Tensor | None:
    """Client ``client_id``'s tensor ``name``, or ``None`` if it has none yet."""
    return states.get(client_id, {}).get(name)


def with_writes(
    states: ClientStates, writes: Mapping[int, Mapping[str, torch.Tensor]]
) -> dict[int, dict[str, torch.Tensor]]:
    """A new store value with ``writes`` merged in; ``states`` is left untouched.

    >>> s = with_writes({}, {3: {"a/x": torch.ones(1)}})
    >>> sorted(with_writes(s, {3: {"a/y": torch.zeros(1)}})[3])
    ['a/x', 'a/y']
    """
    merged = {client: dict(entries) for client, entries in states.items()}
    for client, entries in writes.items():
        merged.setdefault(client, {}).update(entries)
    return merged
