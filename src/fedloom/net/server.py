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
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import torch

from fedloom.client import LocalContext, LocalTraining
from fedloom.net.codec import WireError, decode_tensor, encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.tls import peer_identity
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["Access", "FederationService", "NetworkExecutor", "RoundBoard", "start_server"]

log = logging.getLogger("fedloom.server")


@dataclass(frozen=True)
class Access:
    """Who may take part: client ids in population order, their tokens, the revoked ones.

    With mutual TLS the certificate's common name is the client id; ``tokens`` maps bearer
    tokens to client ids for deployments without client certificates.
    """

    clients: tuple[str, ...]
    tokens: Mapping[str, str] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    trust_claimed_ids: bool = False  # plaintext test setups only: believe the request's id

    def index(self, client_id: str) -> int:
        return self.clients.index(client_id)


@dataclass
class _Round:
    number: int
    plans: dict[int, ClientPlan]
    params: pb.Tensor
    buffers: pb.Tensor
    results: dict[int, ClientResult] = field(default_factory=dict)


class RoundBoard:
    """The state clients see: the open round, who is selected, what has arrived."""

    def __init__(self, access: Access, local: LocalTraining, *, max_tensor_bytes: int):
        self.access = access
        self.local = local
        self.max_tensor_bytes = max_tensor_bytes
        self._lock = threading.Condition()
        self._round: _Round | None = None
        self._done = False
        self.connected: set[str] = set()
        self._told_done: set[int] = set()

    def open(
        self, plans: Sequence[ClientPlan], params: torch.Tensor, buffers: torch.Tensor
    ) -> None:
        with self._lock:
            self._round = _Round(
                number=plans[0].round if plans else -1,
                plans={p.client_id: p for p in plans},
                params=encode_tensor(params),
                buffers=encode_tensor(buffers),
            )
            self._lock.notify_all()

    def close(self) -> dict[int, ClientResult]:
        with self._lock:
            results = dict(self._round.results) if self._round else {}
            self._round = None
            return results

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._round = None
            self._lock.notify_all()

    def wait_for(self, count: int, deadline: float) -> int:
        """Block until ``count`` results arrived or the deadline; the number arrived."""
        with self._lock:
            while True:
                arrived = len(self._round.results) if self._round else 0
                remaining = deadline - time.monotonic()
                if arrived >= count or remaining <= 0:
                    return arrived
                self._lock.wait(timeout=min(remaining, 0.5))

    def wait_farewell(self, timeout_s: float) -> None:
        """After :meth:`finish`: give connected clients time to hear that the run is over."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            expected = {self.access.index(c) for c in self.connected}
            while not expected <= self._told_done and time.monotonic() < deadline:
                self._lock.wait(timeout=0.2)

    def task_for(self, index: int) -> pb.Task:
        with self._lock:
            if self._done:
                self._told_done.add(index)
                self._lock.notify_all()
                return pb.Task(kind="done", message="the run is over")
            current = self._round
            if current is None or index not in current.plans or index in current.results:
                return pb.Task(kind="wait", retry_after_s=0.2)
            plan = current.plans[index]
            local = self.local
            return pb.Task(
                kind="train",
                round=current.number,
                params=current.params,
                buffers=current.buffers,
                seed=plan.seed,
                epochs=plan.epochs or 0,
                steps=plan.steps or 0,
                local=pb.LocalSettings(
                    epochs=local.epochs,
                    steps=local.steps or 0,
                    batch_size=local.batch_size or 0,
                    lr=local.lr,
                    momentum=local.momentum,
                    weight_decay=local.weight_decay,
                ),
            )

    def submit(self, index: int, update: pb.Update) -> str | None:
        """Store an update; the reason it is refused, or ``None``."""
        with self._lock:
            current = self._round
            if current is None or update.round != current.number:
                return f"round {update.round} is not open"
            if index not in current.plans:
                return f"client was not selected for round {update.round}"
            if index in current.results:
                return f"client already submitted for round {update.round}"
            try:
                delta = decode_tensor(update.update, max_bytes=self.max_tensor_bytes)
                buffers = decode_tensor(update.buffers, max_bytes=self.max_tensor_bytes)
            except WireError as exc:
                return f"malformed update: {exc}"
            current.results[index] = ClientResult(
                client_id=index,
                update=delta,
                buffers=buffers,
                num_examples=int(update.num_examples),
                num_steps=int(update.num_steps),
                num_example_passes=int(update.num_example_passes),
                train_loss=float(update.train_loss),
                statistics=dict(update.statistics),
            )
            self._lock.notify_all()
            return None


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

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:  # noqa: N802
        index = self._identify(context, request.client_id)
        name = self.board.access.clients[index]
        if name not in self.board.connected:
            log.info("client %s joined", name)
        self.board.connected.add(name)
        return pb.JoinReply(message=f"welcome {name}", run_id="fedloom")

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.Task:  # noqa: N802
        return self.board.task_for(self._identify(context, request.client_id))

    def SubmitUpdate(self, request: pb.Update, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802
        index = self._identify(context, request.client_id)
        reason = self.board.submit(index, request)
        if reason is not None:
            log.warning("rejected the update of %s: %s", self.board.access.clients[index], reason)
            return pb.Ack(accepted=False, reason=reason)
        return pb.Ack(accepted=True)


class NetworkExecutor:
    """The :class:`~fedloom.engine.Executor` whose clients are on the network.

    ``fit`` opens the round and waits until every selected client submitted, or
    ``round_timeout_s`` passed; clients that did not report are failures ("no update before
    the deadline"), which the round loop leaves out of the average.
    """

    def __init__(self, board: RoundBoard, *, round_timeout_s: float = 60.0):
        self.board = board
        self.round_timeout_s = round_timeout_s

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        global_buffers = next(iter(buffers.values())) if buffers else torch.zeros(0)
        self.board.open(plans, params, global_buffers)
        self.board.wait_for(len(plans), time.monotonic() + self.round_timeout_s)
        arrived = self.board.close()
        return [
            arrived.get(p.client_id)
            or ClientFailure(p.client_id, f"no update within {self.round_timeout_s:g} s")
            for p in plans
        ]


def start_server(
    board: RoundBoard,
    address: str,
    *,
    credentials: grpc.ServerCredentials | None,
    max_message_bytes: int,
    workers: int = 8,
) -> tuple[grpc.Server, int]:
    """Start the gRPC server on ``address`` (``host:port``; port 0 picks one); TLS unless
    ``credentials`` is ``None``. Returns the server and its port."""
    from concurrent import futures

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ],
    )
    rpc.add_FederationServicer_to_server(FederationService(board), server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server, port
