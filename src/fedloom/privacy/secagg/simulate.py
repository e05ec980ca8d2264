"""One round of the protocol in memory: every client and the server, messages as bytes.

:func:`simulate_round` is the reference driver: it is what a transport does (deliver each
message, close each phase), with dropouts scripted instead of observed. Every message goes
through ``to_bytes()`` and back, so the simulation pays the encoding costs a deployment pays
and the codec is exercised on every run. It is pure: no threads, sockets or clocks, unless
a :class:`RoundTrace` is passed to record what the round cost (bytes each client sent and
received, seconds spent in each party's code).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

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

__all__ = ["RoundTrace", "simulate_round"]


@dataclass
class RoundTrace:
    """What one simulated round cost, filled in by :func:`simulate_round`.

    ``bytes_up[c]`` / ``bytes_down[c]``: the encoded messages client ``c`` sent to / received
    from the server (all phases); ``client_s[c]``: seconds in client ``c``'s code (its state
    machine, encoding its messages, decoding the server's); ``server_s``: seconds in the
    server's code (receiving, closing each phase, encoding its messages, unmasking).
    """

    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    client_s: dict[int, float] = field(default_factory=dict)
    server_s: float = 0.0


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
    trace: RoundTrace | None = None,
) -> SecAggResult:
    """The secure sum of ``updates`` (client id -> flat float vector, all one length) and
    ``num_examples`` over the cohort of ``updates``' keys.

    ``drop_after[c] = phase``: client ``c`` sends its message of ``phase`` and then nothing
    more (``Phase.ADVERTISE``: it advertised keys, never shared them; ``Phase.UNMASK``: it
    completes the round). ``secret_seeds`` makes clients' secrets reproducible (tests only).
    ``trace``: filled in with the round's bytes and seconds per party (see :class:`RoundTrace`).
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

    clock = time.perf_counter if trace is not None else _no_clock
    up: dict[int, int] = dict.fromkeys(cohort, 0)
    down: dict[int, int] = dict.fromkeys(cohort, 0)
    client_s: dict[int, float] = dict.fromkeys(cohort, 0.0)
    server_s = 0.0
    try:
        inbox: dict[int, Message | None] = dict.fromkeys(cohort)
        for phase in _ORDER:
            for c in sorted(inbox):
                if active(c, phase):
                    began = clock()
                    message, clients[c] = step(clients[c], inbox[c])
                    data = message.to_bytes()
                    sent = clock()
                    server = server.receive_bytes(data, client_id=c)
                    client_s[c] += sent - began
                    server_s += clock() - sent
                    up[c] += len(data)
            if phase is Phase.UNMASK:
                break
            began = clock()
            outgoing, server = server.advance()
            encoded = {c: m.to_bytes() for c, m in outgoing.items()}
            server_s += clock() - began
            inbox = {}
            for c, data in encoded.items():
                began = clock()
                inbox[c] = decode_message(data)
                client_s[c] += clock() - began
                down[c] += len(data)
        began = clock()
        result, _ = server.finish()
        server_s += clock() - began
    finally:  # an aborted round still says what it cost up to the abort
        if trace is not None:
            trace.bytes_up, trace.bytes_down, trace.client_s = up, down, client_s
            trace.server_s = server_s
    return result


def _no_clock() -> float:
    return 0.0
