"""The server's side of a secure round over gRPC: the room the clients' messages go through.

:class:`SecAggRoom` holds one round's :class:`~fedloom.privacy.secagg.SecAggServer` (the
protocol's state machine, unchanged from simulation) between the gRPC handler threads and the
executor that paces the phases (:mod:`fedloom.net.secagg_executor`). Handlers deliver what
clients send (:meth:`SecAggRoom.receive`) and hand out what the server has for them
(:meth:`SecAggRoom.poll`); the executor closes each phase (:meth:`SecAggRoom.advance`,
:meth:`SecAggRoom.finish`). One lock guards it all; nothing here speaks gRPC except the
small :class:`SecureAggregationService`, which identifies the caller exactly as the
federation service does (certificate or token) before anything else.

Everything a client sends is first checked for form (:mod:`fedloom.net.secagg_wire`), then
judged by the protocol; either way a refusal is logged with the client's name and the reason,
counted, and never changes the sum: a second, different masked input is refused (the first
counts), a message for another round or phase is refused, a malformed or wrong share is set
aside when the secret is reconstructed (or the round aborts naming the client). A client may
send at most :data:`MAX_MESSAGES_PER_ROUND` messages a round; beyond that they are refused
unread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from fedloom.net.board import Access
from fedloom.net.codec import WireError
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.proto import secagg_pb2_grpc as srpc
from fedloom.net.secagg_wire import (
    client_message_from_pb,
    key_list_to_pb,
    share_list_to_pb,
    unmask_request_to_pb,
)
from fedloom.net.server import FederationService
from fedloom.privacy.secagg import (
    KeyList,
    Phase,
    SecAggResult,
    SecAggServer,
    ShareList,
    UnmaskRequest,
)
from fedloom.privacy.secagg.messages import ServerMessage

__all__ = [
    "MAX_MESSAGES_PER_ROUND",
    "SecAggRoom",
    "SecureAggregationService",
    "secure_aggregation_service",
]

log = logging.getLogger("fedloom.server")

MAX_MESSAGES_PER_ROUND = 12  # four phases, resends after connection trouble, a few mistakes
WANTS = {"key_list": Phase.SHARE, "share_list": Phase.MASKED, "unmask_request": Phase.UNMASK}
"""What a client polls for -> the phase the server is in once it is available."""


@dataclass
class _Open:
    server: SecAggServer
    params: dict[int, spb.RoundParams]
    outgoing: dict[int, spb.ServerMessage] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)  # messages received per client
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    refusals: int = 0
    aborted: str | None = None


class SecAggRoom:
    """One secure round at a time (see the module doc)."""

    def __init__(self, access: Access):
        self.access = access
        self._lock = threading.Condition()
        self._open: _Open | None = None
        self._round: int | None = None
        self._last_abort: tuple[int, str] | None = None  # (round, reason), for late pollers

    # -- the executor's side -----------------------------------------------------------------

    def open(self, server: SecAggServer, params: Mapping[int, spb.RoundParams]) -> None:
        """Start collecting key advertisements for ``server``'s round."""
        with self._lock:
            self._open = _Open(server, dict(params))
            self._round = server.round
            self._lock.notify_all()

    def expected(self) -> set[int]:
        """Who should send in the current phase: the cohort, then whoever got the server's
        message of the previous phase."""
        with self._lock:
            current = self._require()
            if current.server.phase is Phase.ADVERTISE:
                return set(current.server.cohort_ids)
            return set(current.outgoing)

    def arrived(self) -> set[int]:
        """Who has sent their message of the current phase (and had it accepted)."""
        with self._lock:
            return _arrived(self._require().server)

    def wait_phase(self, deadline: float) -> set[int]:
        """Block until every expected client has sent this phase's message, or the deadline;
        who has."""
        expected = self.expected()
        with self._lock:
            while True:
                arrived = _arrived(self._require().server)
                remaining = deadline - time.monotonic()
                if expected <= arrived or remaining <= 0:
                    return arrived
                self._lock.wait(timeout=min(remaining, 0.5))

    def advance(self) -> Phase:
        """Close the current phase (``SecAggAborted`` with too few left); the next phase."""
        with self._lock:
            current = self._require()
            outgoing, current.server = current.server.advance()
            current.outgoing = {c: _server_pb(m) for c, m in outgoing.items()}
            self._lock.notify_all()
            return current.server.phase

    def finish(self) -> SecAggResult:
        """Close the unmasking phase: the survivors' decoded sum (``SecAggAborted`` if not)."""
        with self._lock:
            current = self._require()
            result, current.server = current.server.finish()
            current.outgoing = {}
            return result

    def abort(self, reason: str) -> None:
        """The round failed: clients still polling are told why and stop."""
        with self._lock:
            if self._open is not None:
                self._open.aborted = reason
                self._open.outgoing = {}
            self._lock.notify_all()

    def close(self) -> dict[str, float]:
        """End the round; what it cost on the wire (bytes per cohort client each way) and
        how many messages were refused."""
        with self._lock:
            current, self._open = self._open, None
            self._lock.notify_all()
            if current is None:
                return {}
            if current.aborted is not None:
                self._last_abort = (current.server.round, current.aborted)
            n = max(len(current.server.cohort_ids), 1)
            return {
                "secagg_bytes_up_per_client": sum(current.bytes_up.values()) / n,
                "secagg_bytes_down_per_client": sum(current.bytes_down.values()) / n,
                "secagg_refused": float(current.refusals),
            }

    def rejections(self) -> tuple[tuple[int, str, str], ...]:
        """The protocol's rejections so far: (client, phase, reason)."""
        with self._lock:
            current = self._require()
            return tuple((r.client_id, r.phase, r.reason) for r in current.server.rejections)

    def _require(self) -> _Open:
        if self._open is None:
            raise RuntimeError("no secure round is open")
        return self._open

    # -- the clients' side -------------------------------------------------------------------

    def receive(self, index: int, message: spb.ClientMessage) -> str | None:
        """Deliver a client's message; the reason it was refused, or ``None``."""
        name = self.access.clients[index]
        with self._lock:
            current = self._open
            if current is None or current.aborted is not None:
                return "no secure round is open"
            server = current.server
            if index not in server.cohort_ids:
                return f"client {name} is not in the cohort of round {server.round + 1}"
            count = current.sent.get(index, 0) + 1
            current.sent[index] = count
            current.bytes_up[index] = current.bytes_up.get(index, 0) + message.ByteSize()
            if count > MAX_MESSAGES_PER_ROUND:
                return self._refuse(current, name, f"more than {MAX_MESSAGES_PER_ROUND} messages")
            try:
                decoded = client_message_from_pb(
                    message,
                    sender=index,
                    cohort=server.cohort_ids,
                    num_params=server.num_params,
                    bits=server.params.bits,
                )
            except WireError as exc:
                return self._refuse(current, name, f"malformed: {exc}")
            before = len(server.rejections)
            current.server = server.receive(decoded)
            fresh = current.server.rejections[before:]
            self._lock.notify_all()
            if fresh:
                reasons = "; ".join(f"{r.phase}: {r.reason}" for r in fresh)
                if any(r.client_id == index for r in fresh):
                    return self._refuse(current, name, reasons)
                log.warning("secure aggregation, round %d: %s reports: %s", server.round + 1,
                            name, reasons)  # fmt: skip
            return None

    def _refuse(self, current: _Open, name: str, reason: str) -> str:
        current.refusals += 1
        log.warning("secure aggregation, round %d: refused a message of %s: %s",
                    current.server.round + 1, name, reason)  # fmt: skip
        return reason

    def poll(self, index: int, round: int, want: str) -> spb.ServerMessage:
        """What the server has for client ``index``: its round parameters, the message of the
        phase it waits for once ready, ``wait``, or ``aborted`` (with the reason) when it
        cannot take part any more."""
        with self._lock:
            current = self._open
            if current is None or round != self._round:
                if self._last_abort is not None and self._last_abort[0] == round:
                    return spb.ServerMessage(kind="aborted", reason=self._last_abort[1])
                return spb.ServerMessage(kind="aborted", reason=f"round {round + 1} is not open")
            if current.aborted is not None:
                return spb.ServerMessage(kind="aborted", reason=current.aborted)
            if want == "params":
                if index not in current.params:
                    return spb.ServerMessage(kind="aborted", reason="not in this round's cohort")
                reply = spb.ServerMessage(kind="params", params=current.params[index])
            elif want in WANTS:
                phase = current.server.phase
                order = list(Phase)
                if order.index(phase) < order.index(WANTS[want]):
                    return spb.ServerMessage(kind="wait", retry_after_s=0.1)
                if phase is not WANTS[want] or index not in current.outgoing:
                    return spb.ServerMessage(
                        kind="aborted",
                        reason=f"left out of round {round + 1} in phase {phase.value} (a message "
                        "missed its phase's deadline or was refused)",
                    )
                reply = current.outgoing[index]
            else:
                return spb.ServerMessage(kind="aborted", reason=f"unknown request {want[:40]!r}")
            current.bytes_down[index] = current.bytes_down.get(index, 0) + reply.ByteSize()
            return reply


def _arrived(server: SecAggServer) -> set[int]:
    received: Mapping[int, object] = {
        Phase.ADVERTISE: server.adverts,
        Phase.SHARE: server.share_keys,
        Phase.MASKED: server.masked_digests,
        Phase.UNMASK: server.responses,
    }.get(server.phase, {})
    return set(received)


def _server_pb(message: ServerMessage) -> spb.ServerMessage:
    if isinstance(message, KeyList):
        return spb.ServerMessage(kind="key_list", key_list=key_list_to_pb(message))
    if isinstance(message, ShareList):
        return spb.ServerMessage(kind="share_list", share_list=share_list_to_pb(message))
    if isinstance(message, UnmaskRequest):
        return spb.ServerMessage(
            kind="unmask_request", unmask_request=unmask_request_to_pb(message)
        )
    raise TypeError(f"not a server message: {type(message).__name__}")


class SecureAggregationService(srpc.SecureAggregationServicer):
    """The gRPC methods; the caller is identified by the federation service, as for its own
    methods (certificate or token; unknown and revoked callers are refused first)."""

    def __init__(self, room: SecAggRoom, federation: FederationService):
        self.room = room
        self.federation = federation

    def Send(self, request: spb.ClientMessage, context: grpc.ServicerContext) -> spb.Receipt:  # noqa: N802
        fed = self.federation
        index = fed._identify(context, request.client_id)
        reason = fed._guarded(
            context, index, "secure aggregation message", lambda: self.room.receive(index, request)
        )
        return spb.Receipt(accepted=reason is None, reason=reason or "")

    def Receive(self, request: spb.Poll, context: grpc.ServicerContext) -> spb.ServerMessage:  # noqa: N802
        fed = self.federation
        index = fed._identify(context, request.client_id)
        reply: spb.ServerMessage = fed._guarded(
            context, index, "secure aggregation poll",
            lambda: self.room.poll(index, int(request.round), request.want),
        )  # fmt: skip
        return reply


def secure_aggregation_service(
    room: SecAggRoom,
) -> Callable[[grpc.Server, FederationService], None]:
    """For :func:`~fedloom.net.server.start_server`'s ``services``: serve ``room``."""

    def add(server: grpc.Server, federation: FederationService) -> None:
        srpc.add_SecureAggregationServicer_to_server(
            SecureAggregationService(room, federation), server
        )

    return add
