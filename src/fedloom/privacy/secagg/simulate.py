"""One round of the protocol in memory: every client and the server, messages as bytes.

:func:`simulate_round` is the reference driver: it is what a transport does (deliver each
message, close each phase), with dropouts scripted instead of observed. Every message goes
through ``to_bytes()`` and back, so the simulation pays the encoding costs a deployment pays
and the codec is exercised on every run. It is pure: no threads, sockets or clocks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.privacy.secagg.client import SecAggClient
from fedloom.privacy.secagg.config import SecAggConfig
from fedloom.privacy.secagg.messages import (
    KeyList,
    Message,
    Phase,
    ShareList,
    UnmaskRequest,
    decode_message,
)
from fedloom.privacy.secagg.server import SecAggResult, SecAggServer

__all__ = ["simulate_round"]

_ORDER = (Phase.ADVERTISE, Phase.SHARE, Phase.MASKED, Phase.UNMASK)


def simulate_round(
    config: SecAggConfig,
    updates: Mapping[int, np.ndarray],
    num_examples: Mapping[int, int],
    *,
    seed: int,
    round: int,
    drop_after: Mapping[int, Phase] | None = None,
    secret_seeds: Mapping[int, bytes] | None = None,
) -> SecAggResult:
    """The secure sum of ``updates`` (client id -> flat float vector, all one length) and
    ``num_examples`` over the cohort of ``updates``' keys.

    ``drop_after[c] = phase``: client ``c`` sends its message of ``phase`` and then nothing
    more (``Phase.ADVERTISE``: it advertised keys, never shared them; ``Phase.UNMASK``: it
    completes the round). ``secret_seeds`` makes clients' secrets reproducible (tests only).
    Raises :class:`~fedloom.privacy.secagg.errors.SecAggAborted` if the round fails.
    """
    cohort = sorted(updates)
    drops = dict(drop_after or {})
    seeds = dict(secret_seeds or {})
    num_params = int(np.asarray(updates[cohort[0]]).size)
    server = SecAggServer.start(
        config, seed=seed, round=round, cohort_ids=cohort, num_params=num_params
    )
    clients = {
        c: SecAggClient.start(
            config, seed=seed, round=round, client_id=c, cohort_ids=cohort, secret_seed=seeds.get(c)
        )
        for c in cohort
    }

    def active(client_id: int, phase: Phase) -> bool:
        last = drops.get(client_id, Phase.UNMASK)
        return _ORDER.index(phase) <= _ORDER.index(last)

    def step(client: SecAggClient, inbox: Message | None) -> tuple[Message, SecAggClient]:
        """The client's answer to the server's last message (``None`` before the first)."""
        if inbox is None:
            return client.advertise()
        if isinstance(inbox, KeyList):
            return client.share_keys(inbox)
        if isinstance(inbox, ShareList):
            c = client.client_id
            return client.masked_input(inbox, updates[c], num_examples[c])
        if isinstance(inbox, UnmaskRequest):
            return client.unmask(inbox)
        raise TypeError(f"not a server message: {type(inbox).__name__}")

    inbox: dict[int, Message | None] = dict.fromkeys(cohort)
    for phase in _ORDER:
        for c in sorted(inbox):
            if active(c, phase):
                message, clients[c] = step(clients[c], inbox[c])
                server = server.receive_bytes(message.to_bytes(), client_id=c)
        if phase is Phase.UNMASK:
            break
        outgoing, server = server.advance()
        inbox = {c: decode_message(m.to_bytes()) for c, m in outgoing.items()}
    result, _ = server.finish()
    return result
