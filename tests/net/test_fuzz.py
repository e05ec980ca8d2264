"""Fuzzing the wire: thousands of hostile messages against a real TLS server on loopback.

The fuzzer speaks valid gRPC framing with hostile fields (random dtypes, shapes of up to 80
dimensions, negative and huge sizes, wrong byte counts, bad or bomb compression, NaN
statistics and counts, unknown rounds, extra state reports) and also sends mutated copies of
a valid update. Every message must get an answer (a refusal with its reason, or
INVALID_ARGUMENT), never gRPC's UNKNOWN (an unhandled exception); every refusal must be
logged; the server must keep serving; and the round's result must be exactly the honest
client's update, as in the run without the fuzzer.
"""

import logging
import random
import zlib

import grpc
import pytest
import torch

from fedloom.client import LocalTraining
from fedloom.engine.validation import UpdatePolicy, check_update
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import WireError, decode_tensor, encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.server import Access, RoundBoard, start_server
from fedloom.net.tls import channel_credentials, server_credentials
from fedloom.types import ClientPlan, ClientResult

NUM_PARAMS = 6
FUZZERS = 700  # each may be refused 3 times per round: 2,100 decoded messages
MESSAGES = 2500


def _valid(round_=0):
    return pb.Update(
        round=round_,
        update=encode_tensor(torch.full((NUM_PARAMS,), 0.25)),
        buffers=encode_tensor(torch.zeros(0)),
        num_examples=5,
        num_steps=2,
        num_example_passes=10,
        train_loss=0.5,
    )


def _hostile_tensor(rng):
    dims = rng.choice([0, 1, 1, 2, 3, 9, 70, 80])
    shape = [rng.choice([-3, 0, 1, NUM_PARAMS, 7, 2**31, 2**62]) for _ in range(dims)]
    data = rng.choice([b"", b"\x00" * 24, rng.randbytes(rng.randrange(0, 300))])
    compression = rng.choice(["", "", "zlib", "lz4", "\x00" * 5])
    if compression == "zlib" and rng.random() < 0.5:
        data = zlib.compress(b"\x00" * rng.choice([24, 10**6]))
    dtype = rng.choice(["float32", "float64", "int64", "uint8", "object", "<f4", "", "f" * 500])
    return pb.Tensor(dtype=dtype, shape=shape, data=data, compression=compression)


def _hostile(rng):
    message = _valid(rng.choice([0, 0, 1, -1, 2**40]))
    if rng.random() < 0.8:
        message.update.CopyFrom(_hostile_tensor(rng))
    if rng.random() < 0.3:
        message.buffers.CopyFrom(_hostile_tensor(rng))
    if rng.random() < 0.3:
        message.state_report["x" * rng.randrange(1, 50)].CopyFrom(_hostile_tensor(rng))
    if rng.random() < 0.3:
        message.num_examples = rng.choice([-1, 0, 2**62, 5])
        message.num_steps = rng.choice([-7, 0, 2**62, 2])
    if rng.random() < 0.3:
        message.statistics[rng.choice(["work_norm", "", "\u2603"])] = rng.choice(
            [float("nan"), float("inf"), -1e308, 1.0]
        )
    if rng.random() < 0.2:
        message.train_loss = float("nan")
    return message


def _still_valid(message):
    """Whether a mutation left a well-formed update (a changed loss or value): such a message
    is an insider's legitimate-looking update, a matter for robust aggregation, not fuzzing."""
    try:
        result = ClientResult(
            0, decode_tensor(message.update, max_bytes=1 << 16, shape=(NUM_PARAMS,)),
            decode_tensor(message.buffers, max_bytes=1 << 16, shape=(0,)),
            int(message.num_examples), int(message.num_steps), 0, 0.0,
            dict(message.statistics),
        )  # fmt: skip
    except WireError:
        return False
    no_limits = UpdatePolicy()
    fine = check_update(result, num_params=NUM_PARAMS, num_buffers=0, policy=no_limits) is None
    return fine and message.round == 0 and not message.state_report


def _mutated(rng):
    """A valid update's bytes with a few flipped (``None`` when they no longer parse)."""
    data = bytearray(_valid().SerializeToString())
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    message = pb.Update()
    try:
        message.ParseFromString(bytes(data))
    except Exception:  # noqa: BLE001 - unparsable: the fuzzer tries another
        return None
    return message


@pytest.fixture
def server(tmp_path):
    write_quickstart(tmp_path, [])
    names = ("honest", *(f"fuzz-{k}" for k in range(FUZZERS)))
    tokens = {f"t-{name}": name for name in names}
    board = RoundBoard(Access(names, tokens), LocalTraining(), max_tensor_bytes=1 << 16)
    credentials = server_credentials(
        tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem",
        require_client_auth=False,
    )  # fmt: skip
    grpc_server, port = start_server(
        board, "127.0.0.1:0", credentials=credentials, max_message_bytes=1 << 20
    )
    channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(tmp_path / "ca.pem"))
    yield board, rpc.FederationStub(channel), names
    channel.close()
    grpc_server.stop(grace=None)


def test_thousands_of_hostile_messages_leave_the_round_to_the_honest_client(server, caplog):
    board, stub, names = server
    caplog.set_level(logging.INFO, logger="fedloom.server")
    board.open([ClientPlan(k, 0, seed=k) for k in range(len(names))],
               torch.zeros(NUM_PARAMS), torch.zeros(0))  # fmt: skip
    rng = random.Random(2026)
    refused, invalid, sent = 0, 0, 0
    while sent < MESSAGES:
        message = _mutated(rng) if rng.random() < 0.25 else _hostile(rng)
        if message is None or _still_valid(message):  # only hostile messages count
            continue
        sender = names[1 + sent % FUZZERS]
        sent += 1
        try:
            ack = stub.SubmitUpdate(
                message, metadata=(("authorization", f"Bearer t-{sender}"),), timeout=10
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
            invalid += 1
            continue
        assert not ack.accepted or message.round == 0, ack  # only round 0 is open
        refused += not ack.accepted
    joins = 0
    for k in range(200):  # hostile joins and task requests from the same insiders
        auth = (("authorization", f"Bearer t-{names[1 + k]}"),)
        claimed = rng.choice([-(2**62), -1, 0, 1, 2**62])
        try:
            stub.Join(pb.JoinRequest(client_id="\x00" * k, num_examples=claimed),
                      metadata=auth, timeout=10)  # fmt: skip
            joins += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and claimed < 1
        task = stub.GetTask(pb.TaskRequest(client_id="honest"), metadata=auth, timeout=10)
        assert task.kind in ("train", "wait")
    assert 0 < joins < 200
    honest = stub.SubmitUpdate(_valid(), metadata=(("authorization", "Bearer t-honest"),),
                               timeout=10)  # fmt: skip
    assert honest.accepted
    results = board.close()
    assert list(results) == [0]  # the round holds the honest update alone, exactly as sent
    assert torch.equal(results[0].update, torch.full((NUM_PARAMS,), 0.25))
    logged = [r for r in caplog.records if "rejected the update of fuzz-" in r.getMessage()]
    assert refused == len(logged) == MESSAGES - invalid
    decoded = [r for r in logged if "too many refused updates" not in r.getMessage()]
    assert len(decoded) > 2000  # the fuzzers' first three messages each round are checked
    print(f"fuzz: {MESSAGES} sent, {refused} refused and logged ({len(decoded)} decoded and "
          f"checked), {invalid} INVALID_ARGUMENT")  # fmt: skip
