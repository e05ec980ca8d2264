"""The federation server: a gRPC service in front of the same round loop as simulation.

Clients connect out and pull work. Each round the loop calls :class:`NetworkExecutor.fit`,
which opens the round on the :class:`RoundBoard`: the selected clients receive a training
task when they ask, everybody else is told to wait. The round closes when every selected
client has submitted, or at the deadline; then the loop validates, aggregates and evaluates
exactly as in simulation.

Who may do what:

- a caller is identified by its verified client certificate (mutual TLS: the common name)
  or by a bearer token in the ``authorization`` metadata; unknown or revoked callers are
  refused before anything else (``UNAUTHENTICATED`` / ``PERMISSION_DENIED``) and can neither
  fetch the model nor submit;
- a client may submit only for the open round, only if it was selected, and only once;
- every update is decoded with hard size limits and no pickle (:mod:`fedloom.net.codec`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import torch

from fedloom.client import LocalContext
from fedloom.errors import FedloomError
from fedloom.net.board import Access, BoardStatus, RoundBoard
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.tls import peer_identity
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = [
    "Access",
    "BoardStatus",
    "FederationService",
    "NetworkExecutor",
    "RoundBoard",
    "RoundStarved",
    "start_server",
]

log = logging.getLogger("fedloom.server")


class FederationService(rpc.FederationServicer):
    """The gRPC methods; identity first, then the board."""

    def __init__(self, board: RoundBoard):
        self.board = board

    def _identify(self, context: grpc.ServicerContext, claimed: str = "") -> int:
        access = self.board.access
        client_id = peer_identity(context)
        if client_id is None and access.trust_claimed_ids:
            client_id = claimed or None
        if client_id is None:
            metadata = dict(context.invocation_metadata())
            token = str(metadata.get("authorization", "")).removeprefix("Bearer ").strip()
            client_id = access.tokens.get(token) if token else None
        if client_id is None or client_id not in access.clients:
            log.warning("refused a caller without valid credentials (%s)", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown client or missing credentials")
            raise AssertionError("unreachable: abort raises")  # for type checkers
        if client_id in access.revoked:
            log.warning("refused revoked client %s", client_id)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"client {client_id} is revoked")
        return access.index(client_id)

    def _guarded(self, context: grpc.ServicerContext, index: int, what: str, call: Any) -> Any:
        """Run ``call``; an exception (a bug, or input nobody foresaw) is logged with the
        client's name and answered with INVALID_ARGUMENT, never an unlogged UNKNOWN."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - a peer's request must never crash a handler
            name = self.board.access.clients[index]
            log.error("%s of %s failed: %s: %s", what, name, type(exc).__name__, exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what} failed: {type(exc).__name__}")

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:  # noqa: N802
        index = self._identify(context, request.client_id)
        if request.num_examples < 1:
            log.warning("refused the join of %s: %d examples", self.board.access.clients[index],
                        request.num_examples)  # fmt: skip
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "num_examples must be >= 1")
        self._guarded(
            context, index, "join", lambda: self.board.join(index, int(request.num_examples))
        )
        return pb.JoinReply(message=f"welcome {self.board.access.clients[index]}", run_id="fedloom")

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.Task:  # noqa: N802
        index = self._identify(context, request.client_id)
        task: pb.Task = self._guarded(context, index, "task", lambda: self.board.task_for(index))
        return task

    def SubmitUpdate(self, request: pb.Update, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802
        index = self._identify(context, request.client_id)
        reason = self._guarded(
            context, index, "submission", lambda: self.board.submit(index, request)
        )
        if reason is not None:
            log.warning(
                "rejected the update of %s for round %d: %s",
                self.board.access.clients[index],
                request.round + 1,
                reason,
            )
            return pb.Ack(accepted=False, reason=reason)
        return pb.Ack(accepted=True)


class RoundStarved(FedloomError):
    """Too few valid updates arrived in a round, even after the retries."""


class NetworkExecutor:
    """The :class:`~fedloom.engine.Executor` whose clients are on the network.

    ``fit`` opens the round and waits for the selected clients until ``round_timeout_s``.
    With ``close_early`` the round closes as soon as ``min_fit_clients`` valid updates
    arrived (over-select clients to use it, as cross-device systems do); otherwise it waits
    for every selected client or the deadline. Clients that crashed or lost their connection
    simply do not report and become failures; updates that come after the round closed are
    refused as late. When fewer than ``min_fit_clients`` valid updates arrived by the
    deadline, the round waits ``retries`` more deadlines (clients that come back get their
    task again), and then raises :class:`RoundStarved`: the server stops, and its checkpoint
    keeps every completed round. The deadline starts once every selected client has joined
    the run (or ``join_timeout_s`` passed), so slow start-ups are not dropouts.
    """

    def __init__(
        self,
        board: RoundBoard,
        *,
        round_timeout_s: float = 60.0,
        min_fit_clients: int = 1,
        retries: int = 0,
        close_early: bool = False,
        join_timeout_s: float = 300.0,
    ):
        if min_fit_clients < 1:
            raise ValueError(f"min_fit_clients must be >= 1, got {min_fit_clients}")
        self.board = board
        self.round_timeout_s = round_timeout_s
        self.min_fit_clients = min_fit_clients
        self.retries = retries
        self.close_early = close_early
        self.join_timeout_s = join_timeout_s

    def _form_cohort(self, plans: Sequence[ClientPlan], number: int) -> None:
        """Wait (up to ``join_timeout_s``) until every selected client has joined the run, so
        the round's deadline starts when its cohort exists, not when the server started:
        clients still starting up on a busy machine are not counted as dropouts. Clients
        that joined once and then died are not waited for (the round deadline covers them)."""
        started = time.monotonic()
        indices = [p.client_id for p in plans]
        joined = self.board.wait_joined(indices, started + self.join_timeout_s)
        waited = time.monotonic() - started
        if joined < len(indices):
            log.warning(
                "round %d: %d of %d selected clients joined within the join timeout (%g s); "
                "the round starts without the others", number, joined, len(indices),
                self.join_timeout_s,
            )  # fmt: skip
        elif waited > 1:
            log.info("round %d: the cohort formed after %.1f s; its deadline starts now",
                     number, waited)  # fmt: skip

    @property
    def clients_hold_state(self) -> bool:
        """Whether the clients keep their own algorithm state (then the round loop sends
        no per-client corrections: each client computes its own)."""
        return self.board.clients_hold_state

    @property
    def clients_hold_buffers(self) -> bool:
        """Whether the clients keep their own buffers with their personal state (FedBN with
        ``model.buffers: local``): the round loop then stores none and sends the global ones."""
        return self.board.personal_buffers

    @property
    def compresses_on_wire(self) -> bool:
        """The clients compress their updates themselves (with their own error-feedback
        residuals) and decode the broadcast, as the program says; the board decodes the
        updates. So the round loop hands this executor the uncompressed model and gets the
        decoded updates (:mod:`fedloom.compress.feedback`)."""
        return True

    def round_metrics(self) -> dict[str, float]:
        """The last round's protobuf payload bytes each way and the clients' compute time."""
        return dict(self.board.last_traffic)

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        global_buffers, own = start_buffers(buffers)
        number = plans[0].round + 1 if plans else 0
        self.board.open(plans, params, global_buffers, context.extras, own_buffers=own)
        self._form_cohort(plans, number)
        needed = min(self.min_fit_clients, len(plans))
        target = needed if self.close_early else len(plans)
        arrived = 0
        for attempt in range(self.retries + 1):
            arrived = self.board.wait_for(target, time.monotonic() + self.round_timeout_s)
            if arrived >= needed:
                break
            if attempt < self.retries:
                log.warning(
                    "round %d: %d of %d needed valid updates by the deadline; waiting another "
                    "%g s (retry %d of %d)",
                    number, arrived, needed, self.round_timeout_s, attempt + 1, self.retries,
                )  # fmt: skip
        rejected = self.board.rejections()
        results = self.board.close()
        if len(results) < needed:
            status = self.board.status()
            raise RoundStarved(
                f"round {number}: {len(results)} valid update(s), {needed} needed "
                f"(min_fit_clients), after {self.retries + 1} deadline(s) of "
                f"{self.round_timeout_s:g} s; {status.connected} of {len(self.board.access.clients)}"
                " clients connected. The server stops here; its checkpoint keeps every "
                "completed round: start it again with the same command to continue"
            )
        outcomes: list[ClientResult | ClientFailure] = []
        for plan in plans:
            if plan.client_id in results:
                outcomes.append(results[plan.client_id])
                continue
            name = self.board.access.clients[plan.client_id]
            if plan.client_id in rejected:
                reason = f"every update refused: {rejected[plan.client_id][-1]}"
            else:
                reason = (
                    f"dropped out: no update within the round ({self.round_timeout_s:g} s deadline)"
                )
                log.info("round %d: client %s dropped out (no update)", number, name)
            outcomes.append(ClientFailure(plan.client_id, reason, round=plan.round))
        return outcomes


def start_server(
    board: RoundBoard,
    address: str,
    *,
    credentials: grpc.ServerCredentials | None,
    max_message_bytes: int,
    workers: int = 8,
    services: Sequence[Callable[[grpc.Server, FederationService], None]] = (),
) -> tuple[grpc.Server, int]:
    """Start the gRPC server on ``address`` (``host:port``; port 0 picks one); TLS unless
    ``credentials`` is ``None``. ``services`` add more servicers (secure aggregation's),
    given the federation service that identifies callers. Returns the server and its port."""
    from concurrent import futures

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ],
    )
    federation = FederationService(board)
    rpc.add_FederationServicer_to_server(federation, server)
    for add in services:
        add(server, federation)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port


def start_buffers(
    buffers: Mapping[int, torch.Tensor],
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The buffers most of a round's clients start from, and the clients that start from
    others: with ``model.buffers: local`` a client that took part before starts from its
    own running statistics, as in simulation, not from another client's."""
    if not buffers:
        return torch.zeros(0), {}
    counts = Counter(id(b) for b in buffers.values())
    common_id = counts.most_common(1)[0][0]
    common = next(b for b in buffers.values() if id(b) == common_id)
    own = {k: b for k, b in buffers.items() if id(b) != common_id and not torch.equal(b, common)}
    return common, own
