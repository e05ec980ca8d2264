"""A federation client: connects out to the server, pulls tasks, trains locally, submits.

Local training is the same pure code as the sequential simulation engine
(:func:`fedloom.client.train_client`) with the seed, work and settings the server sends, so
a networked run reproduces a simulated one. The client's data never leaves it; only the
update ``w_k - w_t`` (after the program's update transforms: with local DP, clipped and
noised here, before it leaves), its example and step counts, loss and requested statistics do.

Connection problems (server restarting, network down) are retried with exponential backoff;
a refusal of the client's credentials is final.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import torch
from torch import nn

from fedloom.algorithms import StateLogic
from fedloom.algorithms.ditto import personal_program, personal_settings
from fedloom.algorithms.personal import PERSONAL_MODEL
from fedloom.algorithms.personal_client import (
    PERSONAL_BUFFERS,
    PersonalPass,
    PersonalValues,
    personal_pass_plan,
    personal_start,
    split_buffers,
    split_update,
)
from fedloom.client import ClientProgram, LocalContext, LocalTraining, make_objective, train_client
from fedloom.client.objectives import Objective
from fedloom.client.portable import Description, describe, rebuild
from fedloom.client.store import OwnState
from fedloom.client.terms import LinearTerm, linear_correction
from fedloom.compress import RESIDUAL, Compression, compress_update
from fedloom.errors import FedloomError
from fedloom.net.codec import (
    decode_code,
    decode_portable,
    decode_tensor,
    decode_tensors,
    encode_code,
    encode_tensor,
)
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.params import buffer_spec, param_spec
from fedloom.rng import derive_seed
from fedloom.tasks import Batch, Task, num_rows
from fedloom.types import ClientPlan

__all__ = ["run_client"]

log = logging.getLogger("fedloom.client")

FINAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def _settings(message: pb.LocalSettings) -> LocalTraining:
    return LocalTraining(
        epochs=int(message.epochs) or 1,
        steps=int(message.steps) or None,
        batch_size=int(message.batch_size) or None,
        lr=float(message.lr),
        momentum=float(message.momentum),
        weight_decay=float(message.weight_decay),
    )


def run_client(
    address: str,
    *,
    client_id: str,
    data: Batch,
    module: nn.Module,
    task: Task | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
    max_message_bytes: int = 256 * 1024**2,
    max_backoff_s: float = 5.0,
    give_up_after_s: float = 600.0,
    delay_s: float = 0.0,
    on_round: Callable[[int], None] | None = None,
    state_path: str | Path | None = None,
    reproducible_noise: bool = False,
    secagg_stop_after: str | None = None,
) -> int:
    """Take part in a run until the server says it is over; returns the rounds trained.

    The server's task says how to train (local settings, the algorithm's objective terms,
    statistics and update transforms, described as data, and the client half of its state
    logic), so a client needs only its data (a named batch of its whole training split:
    ``{"x": inputs, "y": targets}`` plus any extra entries its task uses) and the model's
    architecture; ``task`` (default classification) is its loss. ``credentials`` are TLS
    channel credentials (:func:`fedloom.net.tls.channel_credentials`); ``None`` means
    plaintext, which a TLS server refuses. ``token`` is sent as a bearer token. ``delay_s``
    makes the client wait that long before each submission, as a slow device would (demos
    and tests of deadlines).

    Algorithms with per-client state (SCAFFOLD's ``c_k``) keep it here, on the client: in
    memory, and in ``state_path`` (a safetensors file, rewritten atomically after each
    accepted update) when given, so that a restarted client continues with its state.

    Update transforms that draw noise (local DP) do so from the round's seed mixed with a
    secret this client draws from the operating system when it starts and never sends: the
    server knows the round's seed, and noise it could regenerate it could subtract.
    ``reproducible_noise`` drops the secret, so that the noise is exactly a simulation's
    (tests and demos that compare a deployed run with its simulation; the server can then
    undo the noise).

    Under secure aggregation (a ``secure_train`` task) the update is not submitted: it is the
    client's input to the protocol (:func:`fedloom.net.secagg_client.take_part`).
    ``secagg_stop_after`` (tests and demos) leaves each secure round after that phase.
    """
    objectives = _Objectives(module, max_message_bytes, task)
    secret = None if reproducible_noise else secrets.randbits(62)
    own = OwnState(state_path)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    trained, backoff, last_contact = 0, 0.2, time.monotonic()
    while True:
        channel = (
            grpc.secure_channel(address, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(address, options=options)
        )
        try:
            with channel:
                stub = rpc.FederationStub(channel)
                stub.Join(pb.JoinRequest(client_id=client_id, num_examples=num_rows(data)),
                          metadata=metadata, timeout=30)  # fmt: skip
                backoff, last_contact = 0.2, time.monotonic()
                while True:
                    job = stub.GetTask(pb.TaskRequest(client_id=client_id), metadata=metadata,
                                       timeout=60)  # fmt: skip
                    last_contact = time.monotonic()
                    if job.kind == "done":
                        log.info("%s: the run is over after %d rounds", client_id, trained)
                        return trained
                    if job.kind == "wait":
                        time.sleep(max(job.retry_after_s, 0.05))
                        continue
                    log.info("%s: training round %d", client_id, job.round + 1)
                    update, writes = _train(job, data, objectives, own, max_message_bytes, secret)
                    if job.kind == "secure_train":  # the update goes in masked, never in clear
                        from fedloom.net.secagg_client import take_part  # loads cryptography

                        take_part(
                            channel, client_id=client_id, round=int(job.round),
                            update=decode_tensor(update.update, max_bytes=max_message_bytes),
                            num_examples=int(update.num_examples), metadata=metadata,
                            delay_s=delay_s, stop_after=secagg_stop_after,
                            timeout_s=give_up_after_s,
                        )  # fmt: skip
                        trained += 1
                        if on_round is not None:
                            on_round(int(job.round))
                        continue
                    update.client_id = client_id
                    if delay_s > 0:
                        time.sleep(delay_s)
                    ack = stub.SubmitUpdate(update, metadata=metadata, timeout=60)
                    if ack.accepted:
                        own.commit(writes)
                    else:
                        log.warning("%s: round %d update refused: %s", client_id,
                                    job.round + 1, ack.reason)  # fmt: skip
                    trained += 1
                    if on_round is not None:
                        on_round(int(job.round))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code in FINAL:
                raise FedloomError(f"{client_id}: the server refused us: {exc.details()}") from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise FedloomError(
                    f"{client_id}: a message exceeded the gRPC size limit ({exc.details()}); "
                    "raise deploy.max_message_mb on the server and max_message_bytes here, or "
                    "turn on deploy.compress"
                ) from None
            if time.monotonic() - last_contact > give_up_after_s:
                raise FedloomError(
                    f"{client_id}: no working connection to {address} for {give_up_after_s:g} s: "
                    "the server is down, or it refused our TLS credentials (check --certs, "
                    "or --insecure against a TLS server)"
                ) from None
            log.info("%s: connection problem (%s); retrying in %.1f s", client_id, code, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


class _Objectives:
    """The client's objective for each program the server sends (built once per program)."""

    def __init__(self, module: nn.Module, max_bytes: int, task: Task | None = None):
        self.module = module
        self.task = task
        self.max_bytes = max_bytes
        self.params, self.buffers = param_spec(module), buffer_spec(module)
        self._built: dict[bytes, tuple[ClientProgram, Objective, StateLogic | None]] = {}
        self._personal: dict[bytes, tuple[PersonalValues | None, PersonalPass | None]] = {}

    def program(self, message: pb.Program) -> tuple[ClientProgram, Objective, StateLogic | None]:
        """The program, its objective and the client half of the algorithm's state logic
        (``None`` when the server keeps the clients' state), rebuilt from their descriptions."""
        key = message.SerializeToString(deterministic=True)
        if key not in self._built:
            terms = tuple(rebuild(self.decode(term)) for term in message.terms)
            values, _ = self.personal(message)
            compression = None
            if message.HasField("upload_compression") or message.HasField("download_compression"):
                compression = Compression(
                    upload=self.rebuilt(message, "upload_compression"),
                    download=self.rebuilt(message, "download_compression"),
                    error_feedback=message.error_feedback,
                )
            program = ClientProgram(
                terms=terms,
                statistics=frozenset(message.statistics),
                update_transforms=tuple(rebuild(self.decode(t)) for t in message.update_transforms),
                alternation=None if values is None else values.alternation(),  # FedRep
                compression=compression,
            )
            objective = make_objective(
                self.module, self.params, self.buffers, terms=terms, task=self.task
            )
            logic = rebuild(self.decode(message.state)) if message.HasField("state") else None
            self._built[key] = (program, objective, logic)
        return self._built[key]

    def personal(self, message: pb.Program) -> tuple[PersonalValues | None, PersonalPass | None]:
        """The personal state this client keeps for the program: its personal coordinates
        (FedPer, FedBN, FedRep) and Ditto's personal pass, each ``None`` when absent."""
        key = message.SerializeToString(deterministic=True)
        if key not in self._personal:
            parts = [rebuild(self.decode(part)) for part in message.personal]
            values = next((p for p in parts if isinstance(p, PersonalValues)), None)
            if values is not None and tuple(values.mask.shape) != (self.params.num_params,):
                raise FedloomError(
                    f"the server's personal mask has shape {tuple(values.mask.shape)}, this "
                    f"client's model {self.params.num_params} parameters"
                )
            found = next((p for p in parts if isinstance(p, PersonalPass)), None)
            self._personal[key] = (values, found)
        return self._personal[key]

    def rebuilt(self, message: pb.Program, name: str) -> Any:
        """The portable value in field ``name`` of ``message``, or ``None`` when unset."""
        return rebuild(self.decode(getattr(message, name))) if message.HasField(name) else None

    def decode(self, message: pb.Portable) -> Description:
        """A portable value's description from the wire, within the message size limit."""
        return decode_portable(message, max_bytes=self.max_bytes)


def _train(
    task: pb.Task,
    data: Batch,
    objectives: _Objectives,
    own: OwnState,
    max_bytes: int,
    secret: int | None = None,
) -> tuple[pb.Update, Mapping[str, torch.Tensor]]:
    """Train one round: the update to submit, and the client's new state entries (to keep
    once the server accepted the update). ``secret``, when given, is mixed into the seed of
    the update transforms' noise."""
    program, objective, logic = objectives.program(task.program)
    compression = program.compression or Compression()
    if compression.download is not None:
        size = objectives.params.num_params
        params = decode_code(task.compressed_params, compression.download, size=size)
    else:
        params = decode_tensor(task.params, max_bytes=max_bytes)
    buffers = decode_tensor(task.buffers, max_bytes=max_bytes)
    if (params.numel(), buffers.numel()) != (
        objectives.params.num_params,
        objectives.buffers.num_params,
    ):
        raise FedloomError(
            f"the server's model has {params.numel()} parameters and {buffers.numel()} buffer "
            f"values, this client's {objectives.params.num_params} and {objectives.buffers.num_params}: "
            "client and server must use the same model (model.name in the config)"
        )
    settings = _settings(task.local)
    own_terms = [rebuild(objectives.decode(term)) for term in task.client_terms]
    shared = decode_tensors(task.shared, max_bytes=max_bytes)
    correction = linear_correction(own_terms)  # a linear term is applied as a correction
    other_terms = tuple(t for t in own_terms if not isinstance(t, LinearTerm))
    if other_terms:  # this round's own terms beyond the program's
        objective = make_objective(
            objectives.module,
            objectives.params,
            objectives.buffers,
            terms=program.terms + other_terms,
            task=objectives.task,
        )
    if logic is not None:  # this client keeps its own state: its correction comes from it
        correction = logic.correction(shared, own.entries)
    values, personal_pass = objectives.personal(task.program)
    if values is not None and values.buffers:  # FedBN's running statistics: its own
        buffers = own.entries.get(PERSONAL_BUFFERS, buffers)
    plan = ClientPlan(
        client_id=0,
        round=int(task.round),
        seed=int(task.seed),
        epochs=int(task.epochs) or None,
        steps=int(task.steps) or None,
        correction=correction,
        start=None if values is None else personal_start(params, values, own.entries),
    )
    started = time.perf_counter()
    result = train_client(
        plan,
        data,
        params,
        buffers,
        objective=objective,
        settings=settings,
        context=LocalContext(params, extras=shared),
        program=program,
        transform_seed=None if secret is None else derive_seed(plan.seed, "secret", secret),
    )
    compute_s = time.perf_counter() - started
    writes: dict[str, torch.Tensor] = {}
    report: Mapping[str, torch.Tensor] = {}
    if logic is not None:
        entries, report = logic.remember(shared, own.entries, result, settings=settings)
        writes.update(entries)
    if values is not None:  # the personal values stay here; their coordinates go out as 0
        sent, kept = split_update(params, result.update, values)
        result, writes = replace(result, update=sent), {**writes, **kept}
        if values.buffers:
            zeros, kept = split_buffers(result.buffers)
            result, writes = replace(result, buffers=zeros), {**writes, **kept}
    if personal_pass is not None:  # Ditto: this client's personal model, trained here
        writes = {**writes, **_personal_pass(plan, data, params, buffers, personal_pass,
                                             objectives, settings, own, shared)}  # fmt: skip
    compress = task.update_compression == "zlib"
    update = pb.Update(
        round=task.round,
        buffers=encode_tensor(result.buffers, compress=compress),
        num_examples=result.num_examples,
        num_steps=result.num_steps,
        num_example_passes=result.num_example_passes,
        train_loss=result.train_loss,
        statistics=dict(result.statistics),
        compute_s=compute_s,
        state_report={k: encode_tensor(v, compress=compress) for k, v in report.items()},
        update_transforms=[describe(t).name for t in program.update_transforms],
    )
    if compression.upload is None:
        update.update.CopyFrom(encode_tensor(result.update, compress=compress))
    else:  # the same code the simulation sends: the round's seed, this client's residual
        code, _, residual = compress_update(
            result.update, own.entries.get(RESIDUAL), compression, seed=plan.seed
        )
        update.compressed_update.CopyFrom(encode_code(code))
        if residual is not None:
            writes[RESIDUAL] = residual
    return update, writes


def _personal_pass(
    plan: ClientPlan,
    data: Batch,
    params: torch.Tensor,
    buffers: torch.Tensor,
    part: PersonalPass,
    objectives: _Objectives,
    settings: LocalTraining,
    own: OwnState,
    shared: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Ditto's personal pass on this client (as the simulation's personal executor runs it):
    the new ``v_k`` to keep, or nothing when the pass diverged (the old one stays)."""
    spec = part.spec()
    program = personal_program(spec)
    objective = make_objective(
        objectives.module, objectives.params, objectives.buffers, terms=program.terms,
        task=objectives.task,
    )  # fmt: skip
    result = train_client(
        personal_pass_plan(plan, own.entries),
        data,
        params,
        buffers,
        objective=objective,
        settings=personal_settings(spec, settings),
        context=LocalContext(params, extras=shared),
        program=program,
    )
    if not bool(torch.isfinite(result.update).all()):
        return {}
    return {PERSONAL_MODEL: params + result.update}
