"""Bytes on the wire of secure aggregation over gRPC (issue 15, the deployment slice).

One round of the protocol through the deployed server's room (:class:`fedloom.net.secagg_room.
SecAggRoom`), with every client message and every server message in its protobuf form
(``proto/secagg.proto``), counted exactly as a deployed server counts them in its
``secagg_bytes_up_per_client`` / ``secagg_bytes_down_per_client`` metrics: the serialized
protobuf payload, without gRPC's HTTP/2 framing (a few dozen bytes a message). The clients
are the protocol's real state machines, in this process, one after another; the network is
left out, so the numbers are the payload's, not a latency. Plain FedAvg's upload is one
``Update`` message with the float32 update (``fedloom.proto``, as ``fedloom client`` sends
it), for comparison. P = 199,210 (the MNIST 2NN), a 32-bit group, updates uniform in
[-0.5, 0.5], complete graph for n = 10 and 50, SecAgg+ with k = 14 neighbors for n = 100.

Run: ``python -m benchmarks.secagg_wire`` (writes benchmarks/results/secagg_wire.json).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fedloom.net.board import Access
from fedloom.net.codec import encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.secagg_room import SecAggRoom
from fedloom.net.secagg_wire import (
    client_message_to_pb,
    key_list_from_pb,
    share_list_from_pb,
    unmask_request_from_pb,
)
from fedloom.privacy.secagg import SecAggClient, SecAggConfig, SecAggServer

P = 199_210
SIZES = ((10, None), (50, None), (100, 14))
OUT = Path(__file__).parent / "results" / "secagg_wire.json"


def one_round(n: int, neighbors: int | None) -> dict[str, float]:
    config = SecAggConfig(bits=32, clip_range=1.0, neighbors=neighbors)
    cohort = list(range(n))
    names = tuple(f"client-{k}" for k in cohort)
    room = SecAggRoom(Access(names))
    server = SecAggServer.start(config, seed=0, round=0, cohort_ids=cohort, num_params=P)
    room.open(server, {c: spb.RoundParams(round=0, client_index=c) for c in cohort})
    rng = np.random.default_rng(0)
    clients = {
        c: SecAggClient.start(config, seed=0, round=0, client_id=c, cohort_ids=cohort)
        for c in cohort
    }
    started = time.perf_counter()
    for c in cohort:
        message, clients[c] = clients[c].advertise()
        assert room.receive(c, client_message_to_pb(message, client_name=names[c])) is None
    room.advance()
    for c in cohort:
        keys = key_list_from_pb(room.poll(c, 0, "key_list").key_list, cohort)
        message, clients[c] = clients[c].share_keys(keys)
        assert room.receive(c, client_message_to_pb(message, client_name=names[c])) is None
    room.advance()
    for c in cohort:
        shares = share_list_from_pb(room.poll(c, 0, "share_list").share_list, cohort)
        update = rng.uniform(-0.5, 0.5, P)
        message, clients[c] = clients[c].masked_input(shares, update, 100)
        assert room.receive(c, client_message_to_pb(message, client_name=names[c])) is None
    room.advance()
    for c in cohort:
        request = unmask_request_from_pb(room.poll(c, 0, "unmask_request").unmask_request, cohort)
        message, clients[c] = clients[c].unmask(request)
        assert room.receive(c, client_message_to_pb(message, client_name=names[c])) is None
    room.finish()
    wall_s = time.perf_counter() - started
    cost = room.close()
    plain = pb.Update(client_id=names[0], round=0, update=encode_tensor(torch.zeros(P)),
                      buffers=encode_tensor(torch.zeros(0)), num_examples=100, num_steps=1)  # fmt: skip
    return {
        "clients": n,
        "neighbors": neighbors,
        "params": P,
        "secure_bytes_up_per_client": cost["secagg_bytes_up_per_client"],
        "secure_bytes_down_per_client": cost["secagg_bytes_down_per_client"],
        "plain_bytes_up_per_client": plain.ByteSize(),
        "up_vs_plain": cost["secagg_bytes_up_per_client"] / plain.ByteSize(),
        "round_wall_s_all_in_one_process": wall_s,
    }


def main() -> int:
    rows = [one_round(n, k) for n, k in SIZES]
    for row in rows:
        print(
            f"n={row['clients']:4d} k={row['neighbors']!s:>4}: up {row['secure_bytes_up_per_client']:,.0f} B "
            f"(plain {row['plain_bytes_up_per_client']:,} B, x{row['up_vs_plain']:.4f}), "
            f"down {row['secure_bytes_down_per_client']:,.0f} B"
        )
    OUT.write_text(json.dumps({"benchmark": "secure aggregation bytes on the wire (protobuf)",
                               "command": "python -m benchmarks.secagg_wire", "rows": rows},
                              indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
