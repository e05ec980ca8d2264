"""The client's side of a secure round over gRPC (see :mod:`fedloom.net.secagg_executor`).

After training on a ``secure_train`` task, :func:`take_part` turns the update into the
client's input (:func:`~fedloom.privacy.secagg.decoded.secure_input`: clip, weight) and runs
the protocol's client state machine (:class:`~fedloom.privacy.secagg.SecAggClient`, the same
as in simulation) against the SecureAggregation service: ask for the round's parameters,
then for each phase send the client's message and wait for the server's next one. The
update itself never leaves the client: only public keys, shares sealed for other clients, the
masked vector and the shares the unmasking needs.

The client is as suspicious of the server as the protocol allows: every server message is
checked for form (:mod:`fedloom.net.secagg_wire`) and then by the state machine, which refuses
a second unmasking request, one that lists this client as dropped, or a list with
another round's or a non-neighbor's entries. A refusal, an abort announced by the server or a
phase it was left out of ends the client's part in the round (logged); it then asks for its
next task as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc
import torch

from fedloom.errors import FedloomError
from fedloom.net.codec import WireError
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.proto import secagg_pb2_grpc as srpc
from fedloom.net.secagg_wire import (
    client_message_to_pb,
    key_list_from_pb,
    share_list_from_pb,
    unmask_request_from_pb,
)
from fedloom.privacy.secagg import SecAggClient, SecAggConfig, SecAggError
from fedloom.privacy.secagg.decoded import WEIGHTINGS, secure_input
from fedloom.privacy.secagg.messages import ClientMessage
from fedloom.privacy.secagg.stage import DROPOUT_PHASES

__all__ = ["SECURE_TRAIN", "take_part"]

log = logging.getLogger("fedloom.client")

SECURE_TRAIN = "secure_train"
"""The kind of a task whose update is aggregated securely."""


class _Left(Exception):
    """This client's part in the round is over (the reason is logged)."""


def take_part(
    channel: grpc.Channel,
    *,
    client_id: str,
    round: int,
    update: torch.Tensor,
    num_examples: int,
    metadata: Sequence[tuple[str, str]] = (),
    delay_s: float = 0.0,
    stop_after: str | None = None,
    timeout_s: float = 600.0,
) -> bool:
    """Run this client's part of the secure round ``round`` with its ``update`` (flat float32,
    after the program's update transforms) and ``num_examples``; whether it answered the
    unmasking request (its part complete).

    ``delay_s`` waits before sending the masked input, as a slow device would; ``stop_after``
    (``"advertise"``, ``"share"``, ``"masked_input"``; tests and demos) leaves the round right
    after sending that phase's message, as a client that crashed there would.
    """
    if stop_after is not None and stop_after not in DROPOUT_PHASES:
        raise ValueError(
            f"stop_after must be one of {', '.join(DROPOUT_PHASES)}, got {stop_after!r}"
        )
    stub = srpc.SecureAggregationStub(channel)
    deadline = time.monotonic() + timeout_s

    def poll(want: str) -> spb.ServerMessage:
        while True:
            reply = stub.Receive(spb.Poll(client_id=client_id, round=round, want=want),
                                 metadata=metadata, timeout=60)  # fmt: skip
            if reply.kind == want:
                return reply
            if reply.kind != "wait":
                raise _Left(f"the server says: {reply.reason[:300] or reply.kind}")
            if time.monotonic() > deadline:
                raise _Left(f"no {want} from the server within {timeout_s:g} s")
            time.sleep(min(max(reply.retry_after_s, 0.02), 1.0))

    def send(message: ClientMessage, phase: str) -> None:
        receipt = stub.Send(client_message_to_pb(message, client_name=client_id),
                            metadata=metadata, timeout=60)  # fmt: skip
        if not receipt.accepted:
            raise _Left(f"the server refused our {phase} message: {receipt.reason[:300]}")
        log.info("%s: secure aggregation round %d: sent %s", client_id, round + 1, phase)
        if stop_after == phase:
            raise _Left(f"stopping after {phase}, as asked (a simulated crash)")

    try:
        params = poll("params").params
        client, cohort = _start(params, round=round, num_params=update.numel())
        vector, weight = secure_input(
            update, num_examples, weighting=params.weighting, clip_norm=params.clip_norm or None
        )
        clipped = int((abs(vector) > params.clip_range).sum())
        if clipped:
            log.warning("%s: %d coordinates of our input are beyond the clip range %g and are "
                        "clipped (server.secure_aggregation.clip_range is too small)",
                        client_id, clipped, params.clip_range)  # fmt: skip
        advert, client = client.advertise()
        send(advert, "advertise")
        key_list = key_list_from_pb(poll("key_list").key_list, cohort)
        shares, client = client.share_keys(key_list)
        send(shares, "share")
        share_list = share_list_from_pb(poll("share_list").share_list, cohort)
        if delay_s > 0:
            time.sleep(delay_s)
        masked, client = client.masked_input(share_list, vector, weight)
        send(masked, "masked_input")
        request = unmask_request_from_pb(poll("unmask_request").unmask_request, cohort)
        answer, client = client.unmask(request)
        send(answer, "unmask")
        return True
    except _Left as left:
        log.warning("%s: left secure aggregation round %d: %s", client_id, round + 1, left)
    except (SecAggError, WireError) as exc:
        log.warning("%s: refused a server message in secure aggregation round %d: %s",
                    client_id, round + 1, exc)  # fmt: skip
    return False


def _start(
    params: spb.RoundParams, *, round: int, num_params: int
) -> tuple[SecAggClient, frozenset[int]]:
    """The protocol's client state for the server's round parameters, checked."""
    cohort = list(params.cohort)
    problems = []
    if params.round != round:
        problems.append(f"parameters for round {params.round + 1}")
    if params.num_params != num_params:
        problems.append(f"{params.num_params} parameters, this model has {num_params}")
    if len(set(cohort)) != len(cohort) or any(c < 0 for c in cohort):
        problems.append("a cohort with repeated or negative ids")
    if params.client_index not in cohort:
        problems.append(f"our id {params.client_index} is not in the cohort")
    if params.weighting not in WEIGHTINGS:
        problems.append(f"weighting {params.weighting[:40]!r}")
    if params.clip_norm < 0:
        problems.append(f"clip norm {params.clip_norm}")
    if problems:
        raise _Left("unusable round parameters: " + "; ".join(problems))
    config = SecAggConfig(
        threshold=int(params.threshold) or None,
        bits=int(params.bits),
        clip_range=float(params.clip_range),
        neighbors=int(params.neighbors) or None,
        value_bits=int(params.value_bits) or None,
    )
    try:
        client = SecAggClient.start(config, seed=int(params.seed), round=round,
                                    client_id=int(params.client_index), cohort_ids=cohort)  # fmt: skip
    except (FedloomError, ValueError) as exc:  # ConfigError: values no cohort can use
        raise _Left(f"unusable round parameters: {exc}") from None
    return client, frozenset(cohort)
