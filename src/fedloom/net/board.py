"""The round board: the server's shared view of one round, between the gRPC threads and the
round loop.

The loop opens a round for its cohort and waits; gRPC handler threads hand each selected
client its task, check every submitted update on arrival (the same checks as in simulation,
plus the statistics the algorithm needs, the example count announced at join and the
program's update transforms, such as local DP's noise, named as applied) and record
it; the loop closes the round at the deadline or when every selected client has submitted.
Everything here is guarded by one lock; nothing here speaks gRPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from fedloom.algorithms import StateLogic
from fedloom.client import ClientProgram, LocalTraining
from fedloom.client.terms import LinearTerm
from fedloom.compress import Compression
from fedloom.engine.validation import UpdatePolicy, check_update
from fedloom.net.codec import (
    WireError,
    decode_code,
    decode_tensor,
    decode_tensors,
    encode_code,
    encode_portable,
    encode_tensor,
)
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.types import ClientPlan, ClientResult

__all__ = [
    "CONNECTED_WITHIN_S",
    "MAX_REJECTIONS_PER_ROUND",
    "Access",
    "BoardStatus",
    "Refusal",
    "RoundBoard",
]

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
    params: pb.Tensor  # empty when the model travels compressed
    buffers: pb.Tensor
    num_params: int
    num_buffers: int
    shared: dict[str, pb.Tensor] = field(default_factory=dict)
    corrections: dict[int, pb.Portable] = field(default_factory=dict)  # as linear terms
    results: dict[int, ClientResult] = field(default_factory=dict)
    rejections: dict[int, list[str]] = field(default_factory=dict)
    handed_out: set[int] = field(default_factory=set)
    bytes_down: int = 0  # protobuf payload of the training tasks handed out
    bytes_up: int = 0  # protobuf payload of every update received (refused ones too)
    compute_s: dict[int, float] = field(default_factory=dict)  # as the clients report it
    compressed_params: pb.Compressed | None = None  # the model, with a download compressor
    own_buffers: dict[int, pb.Tensor] = field(default_factory=dict)  # model.buffers: local


@dataclass(frozen=True)
class BoardStatus:
    """What the operator sees: the open round and who is around."""

    round: int | None
    selected: int
    received: int
    rejected: int
    connected: int
    joined: int


@dataclass(frozen=True)
class Refusal:
    """One refused submission, as the client was told (round counted from 1)."""

    round: int
    client_id: str
    reason: str


MAX_REJECTIONS_PER_ROUND = 3  # a client may resend a refused update, but not forever
CONNECTED_WITHIN_S = 30.0  # a client seen this recently (or training now) counts as connected


class RoundBoard:
    """The state clients see: the open round, who is selected, what has arrived.

    Every update is decoded and validated when it arrives
    (:func:`fedloom.engine.validation.check_update`, the same checks as in simulation), so a
    client learns at once why its update was refused, and only valid updates count toward
    the round's ``min_fit_clients``. A refused client may resend (a few times) until one of
    its updates is accepted; an accepted one is final.
    """

    def __init__(
        self,
        access: Access,
        local: LocalTraining,
        *,
        max_tensor_bytes: int,
        policy: UpdatePolicy | None = None,
        program: ClientProgram | None = None,
        state: StateLogic | None = None,
        clients_hold_state: bool = True,
        compress: bool = False,
        personal: Sequence[object] = (),
    ):
        """``personal``: the personal state each client keeps itself, as portable values
        (:func:`fedloom.algorithms.personal_client.personal_parts`); updates that carry a
        personal coordinate are refused."""
        program = program or ClientProgram()
        # every term, update transform and the state logic travel as data; describing them
        # now makes one that cannot travel an error at start-up, not in round 1
        self._program = pb.Program(
            statistics=sorted(program.statistics),
            terms=[encode_portable(term) for term in program.terms],
            update_transforms=[encode_portable(t) for t in program.update_transforms],
            personal=[encode_portable(part) for part in personal],
        )
        if state is not None and clients_hold_state:
            self._program.state.CopyFrom(encode_portable(state))
        self.compression = program.compression or Compression()
        if self.compression.upload is not None:
            self._program.upload_compression.CopyFrom(encode_portable(self.compression.upload))
            self._program.error_feedback = self.compression.error_feedback
        if self.compression.download is not None:
            self._program.download_compression.CopyFrom(encode_portable(self.compression.download))
        self._transforms = [t.name for t in self._program.update_transforms]
        self.access = access
        self.local = local
        self.max_tensor_bytes = max_tensor_bytes
        self.policy = policy or UpdatePolicy()
        self.program = program
        self.state = state
        self.clients_hold_state = clients_hold_state and (state is not None or bool(personal))
        # coordinates no update may carry: the clients' personal values stay with them
        masks = [getattr(part, "coordinates", None) for part in personal]
        self._personal_mask = next((m for m in masks if m is not None), None)
        self.personal_buffers = any(getattr(part, "buffers", False) for part in personal)
        self.compress = compress
        self._lock = threading.Condition()
        self._round: _Round | None = None
        self._last_closed: int | None = None
        self._done = False
        self.joined: dict[str, int] = {}  # client id -> the example count it announced
        self.last_seen: dict[str, float] = {}
        self._told_done: set[int] = set()
        self.last_traffic: dict[str, float] = {}
        # secure aggregation (fedloom.net.secagg_executor): tasks say "secure_train", each is
        # handed out once a round, and plain updates are refused unread
        self.secure = False
        self.refusals: deque[Refusal] = deque(maxlen=200)  # the latest, for the dashboard

    # -- the round loop's side -------------------------------------------------------------

    def open(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: torch.Tensor,
        shared: Mapping[str, torch.Tensor] | None = None,
        own_buffers: Mapping[int, torch.Tensor] | None = None,
    ) -> None:
        """Open a round for ``plans``; ``shared`` is what the algorithm's state sends every
        client (sent only to clients that keep their own state); ``own_buffers`` the clients
        that start from buffers of their own instead of ``buffers`` (``model.buffers: local``
        kept by the server: each client's running statistics from its last round)."""
        shared = shared if self.clients_hold_state and shared else {}
        download = self.compression.download
        with self._lock:
            self._round = _Round(
                number=plans[0].round if plans else -1,
                plans={p.client_id: p for p in plans},
                params=(
                    encode_tensor(params, compress=self.compress)
                    if download is None
                    else pb.Tensor()
                ),
                compressed_params=(
                    encode_code(download.encode(params, seed=0)) if download is not None else None
                ),
                buffers=encode_tensor(buffers, compress=self.compress),
                num_params=params.numel(),
                num_buffers=buffers.numel(),
                shared={k: encode_tensor(v, compress=self.compress) for k, v in shared.items()},
                own_buffers={
                    k: encode_tensor(v, compress=self.compress)
                    for k, v in (own_buffers or {}).items()
                },
                corrections={
                    p.client_id: encode_portable(LinearTerm(p.correction), compress=self.compress)
                    for p in plans
                    if p.correction is not None
                },
            )
            self._lock.notify_all()

    def close(self) -> dict[int, ClientResult]:
        """End the open round: its valid results; later submissions are refused as late."""
        with self._lock:
            current, self._round = self._round, None
            if current is None:
                return {}
            self._last_closed = current.number
            compute = list(current.compute_s.values()) or [0.0]
            self.last_traffic = {
                "wire_bytes_down": float(current.bytes_down),
                "wire_bytes_up": float(current.bytes_up),
                "client_compute_s_max": max(compute),
                "client_compute_s_sum": sum(compute),
            }
            return dict(current.results)

    def rejections(self) -> dict[int, list[str]]:
        """The open round's refused updates: client index -> reasons."""
        with self._lock:
            return {k: list(v) for k, v in self._round.rejections.items()} if self._round else {}

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._round = None
            self._lock.notify_all()

    def wait_for(self, count: int, deadline: float) -> int:
        """Block until ``count`` valid results arrived or the deadline; the number arrived."""
        with self._lock:
            while True:
                arrived = len(self._round.results) if self._round else 0
                remaining = deadline - time.monotonic()
                if arrived >= count or remaining <= 0:
                    return arrived
                self._lock.wait(timeout=min(remaining, 0.5))

    def wait_joined(self, indices: Sequence[int], deadline: float) -> int:
        """Block until every client in ``indices`` has joined (at any time in the run) or
        the deadline; the number that joined."""
        names = {self.access.clients[i] for i in indices}
        with self._lock:
            while True:
                joined = len(names & self.joined.keys())
                remaining = deadline - time.monotonic()
                if joined == len(names) or remaining <= 0:
                    return joined
                self._lock.wait(timeout=min(remaining, 0.5))

    def wait_farewell(self, timeout_s: float) -> None:
        """After :meth:`finish`: give connected clients time to hear that the run is over."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            expected = {self.access.index(c) for c in self._connected()}
            while not expected <= self._told_done and time.monotonic() < deadline:
                self._lock.wait(timeout=0.2)

    def status(self) -> BoardStatus:
        with self._lock:
            current = self._round
            return BoardStatus(
                round=current.number + 1 if current else None,
                selected=len(current.plans) if current else 0,
                received=len(current.results) if current else 0,
                rejected=sum(map(len, current.rejections.values())) if current else 0,
                connected=len(self._connected()),
                joined=len(self.joined),
            )

    def _connected(self) -> set[str]:
        now = time.monotonic()
        training = (
            {self.access.clients[i] for i in self._round.handed_out - set(self._round.results)}
            if self._round
            else set()
        )
        recent = {c for c, t in self.last_seen.items() if now - t < CONNECTED_WITHIN_S}
        return recent | training

    # -- the clients' side -----------------------------------------------------------------

    def join(self, index: int, num_examples: int) -> None:
        name = self.access.clients[index]
        with self._lock:
            if name not in self.joined:
                log.info("client %s joined (%d examples)", name, num_examples)
            elif name not in self._connected():
                log.info("client %s rejoined", name)
            self.joined[name] = num_examples
            self.last_seen[name] = time.monotonic()
            self._lock.notify_all()  # a forming cohort may be waiting for this client

    def task_for(self, index: int) -> pb.Task:
        with self._lock:
            self.last_seen[self.access.clients[index]] = time.monotonic()
            if self._done:
                self._told_done.add(index)
                self._lock.notify_all()
                return pb.Task(kind="done", message="the run is over")
            current = self._round
            if current is None or index not in current.plans or index in current.results:
                return pb.Task(kind="wait", retry_after_s=0.2)
            if self.secure and index in current.handed_out:  # its keys would change: no retry
                return pb.Task(kind="wait", retry_after_s=0.2)
            current.handed_out.add(index)
            plan = current.plans[index]
            local = self.local
            own_terms = [current.corrections[index]] if index in current.corrections else []
            task = pb.Task(
                kind="secure_train" if self.secure else "train",
                round=current.number,
                params=current.params,
                buffers=current.own_buffers.get(index, current.buffers),
                shared=current.shared,
                client_terms=own_terms,
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
                program=self._program,
                update_compression="zlib" if self.compress else "",
            )
            if current.compressed_params is not None:
                task.compressed_params.CopyFrom(current.compressed_params)
            current.bytes_down += task.ByteSize()
            return task

    def submit(self, index: int, update: pb.Update) -> str | None:
        """Store a valid update; the reason it is refused, or ``None`` (refusals are also
        kept in :attr:`refusals`, the latest 200)."""
        reason = self._submit(index, update)
        if reason is not None:
            with self._lock:
                self.refusals.append(Refusal(update.round + 1, self.access.clients[index], reason))
        return reason

    def recent_refusals(self, limit: int = 50) -> list[Refusal]:
        """The latest ``limit`` refusals, oldest first."""
        with self._lock:
            return list(self.refusals)[-limit:]

    def _submit(self, index: int, update: pb.Update) -> str | None:
        name = self.access.clients[index]
        with self._lock:
            self.last_seen[name] = time.monotonic()
            current = self._round
            if current is None or update.round != current.number:
                if update.round == self._last_closed:
                    return f"late: round {update.round + 1} already closed"
                return f"round {update.round + 1} is not open"
            if index not in current.plans:
                return f"client was not selected for round {update.round + 1}"
            if index in current.results:
                return f"client already submitted for round {update.round + 1}"
            if self.secure:
                return "this run uses secure aggregation: updates travel masked (SecureAggregation)"
            current.bytes_up += update.ByteSize()
            refused = current.rejections.setdefault(index, [])
            if len(refused) >= MAX_REJECTIONS_PER_ROUND:
                return f"too many refused updates in round {update.round + 1}"
            try:
                reason = self._check(index, update, current)
            except Exception as exc:  # noqa: BLE001 - a peer's bytes must never crash a handler
                log.debug("update of %s crashed its check", name, exc_info=True)
                reason = f"malformed update: {type(exc).__name__}: {str(exc)[:200]}"
            if isinstance(reason, str):
                refused.append(reason)
                return reason
            current.results[index] = reason
            current.compute_s[index] = float(update.compute_s)
            self._lock.notify_all()
            return None

    def _check(self, index: int, update: pb.Update, current: _Round) -> ClientResult | str:
        try:
            limit, params, values = (
                self.max_tensor_bytes,
                (current.num_params,),
                (current.num_buffers,),
            )
            upload = self.compression.upload
            if upload is None:
                delta = decode_tensor(update.update, max_bytes=limit, shape=params)
            elif not update.HasField("compressed_update") or update.HasField("update"):
                return (
                    f"the update is not compressed with {upload.name}, as the program asks: "
                    "an outdated or misbehaving client"
                )
            else:
                delta = decode_code(update.compressed_update, upload, size=current.num_params)
            buffers = decode_tensor(update.buffers, max_bytes=limit, shape=values)
            report = decode_tensors(update.state_report, max_bytes=limit, shape=params)
        except WireError as exc:
            return f"malformed update: {exc}"
        if list(update.update_transforms) != self._transforms:
            return (
                f"the update went through transforms {list(update.update_transforms)}, the "
                f"program asks for {self._transforms}: an outdated or misbehaving client"
            )
        expected = set(self.state.reports) if self.clients_hold_state and self.state else set()
        if set(report) != expected:
            return f"state report has {sorted(report)}, expected {sorted(expected)}"
        result = ClientResult(
            client_id=index,
            update=delta,
            buffers=buffers,
            num_examples=int(update.num_examples),
            num_steps=int(update.num_steps),
            num_example_passes=int(update.num_example_passes),
            train_loss=float(update.train_loss),
            statistics=dict(update.statistics),
            state_report=report if self.clients_hold_state else None,
        )
        mask = self._personal_mask
        if mask is not None and bool(delta[mask].any()):
            return (
                "the update carries values on the personal coordinates, which stay on the "
                "client: an outdated or misbehaving client"
            )
        if self.personal_buffers and bool(buffers.any()):
            return (
                "the update carries buffer values, which stay on the client with its personal "
                "state: an outdated or misbehaving client"
            )
        missing = sorted(set(self.program.statistics) - set(result.statistics))
        if missing:
            return f"missing statistics {missing}"
        problem = check_update(
            result,
            num_params=current.num_params,
            num_buffers=current.num_buffers,
            policy=self.policy,
            known_examples=self.joined.get(self.access.clients[index]),
        )
        return problem or result
