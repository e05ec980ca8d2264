"""Who may do what on a real TLS gRPC server: tokens, revocation, selection, duplicates."""

import grpc
import pytest
import torch

from fedloom.client import LocalTraining
from fedloom.errors import FedloomError
from fedloom.net.certs import write_quickstart
from fedloom.net.client import run_client
from fedloom.net.codec import encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.server import Access, RoundBoard, start_server
from fedloom.net.tls import channel_credentials, server_credentials
from fedloom.types import ClientPlan

TOKENS = {"t-alice": "alice", "t-bob": "bob", "t-eve": "eve"}


@pytest.fixture
def served(tmp_path):
    write_quickstart(tmp_path, [])
    access = Access(("alice", "bob", "eve"), TOKENS, revoked=frozenset({"eve"}))
    board = RoundBoard(access, LocalTraining(), max_tensor_bytes=1 << 16)
    credentials = server_credentials(
        tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem",
        require_client_auth=False,
    )  # fmt: skip
    server, port = start_server(
        board, "127.0.0.1:0", credentials=credentials, max_message_bytes=1 << 20
    )
    channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(tmp_path / "ca.pem"))
    yield board, rpc.FederationStub(channel), port, tmp_path
    channel.close()
    server.stop(grace=None)


def _as(token):
    return (("authorization", f"Bearer {token}"),)


def _update(round_, values=(0.5, 0.5)):
    return pb.Update(
        round=round_,
        update=encode_tensor(torch.tensor(values)),
        buffers=encode_tensor(torch.zeros(0)),
        num_examples=3,
        num_steps=1,
        num_example_passes=3,
        train_loss=1.0,
    )


def test_unknown_and_revoked_tokens_cannot_fetch_or_submit(served):
    board, stub, _, _ = served
    board.open([ClientPlan(0, 0, 11)], torch.zeros(2), torch.zeros(0))
    for token, code in (
        ("t-mallory", grpc.StatusCode.UNAUTHENTICATED),
        ("t-eve", grpc.StatusCode.PERMISSION_DENIED),
    ):
        for call in (
            lambda md: stub.GetTask(pb.TaskRequest(), metadata=md, timeout=10),
            lambda md: stub.SubmitUpdate(_update(0), metadata=md, timeout=10),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(_as(token))
            assert info.value.code() == code
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTask(pb.TaskRequest(client_id="alice"), timeout=10)  # no credentials at all
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert board.close() == {}


def test_only_selected_clients_train_once_in_the_open_round(served):
    board, stub, _, _ = served
    board.open([ClientPlan(0, 4, 11)], torch.zeros(2), torch.zeros(0))  # alice, round 4
    task = stub.GetTask(pb.TaskRequest(), metadata=_as("t-alice"), timeout=10)
    assert (task.kind, task.round, task.seed) == ("train", 4, 11)
    assert stub.GetTask(pb.TaskRequest(), metadata=_as("t-bob"), timeout=10).kind == "wait"
    refused = {
        "bob": stub.SubmitUpdate(_update(4), metadata=_as("t-bob"), timeout=10),
        "old round": stub.SubmitUpdate(_update(3), metadata=_as("t-alice"), timeout=10),
    }
    assert refused["bob"].reason == "client was not selected for round 5"
    assert refused["old round"].reason == "round 4 is not open"
    bad = _update(4)
    bad.update.dtype = "object"
    assert (
        "malformed update: unknown dtype 'object'"
        in stub.SubmitUpdate(bad, metadata=_as("t-alice"), timeout=10).reason
    )
    assert stub.SubmitUpdate(_update(4), metadata=_as("t-alice"), timeout=10).accepted
    again = stub.SubmitUpdate(_update(4, (9.0, 9.0)), metadata=_as("t-alice"), timeout=10)
    assert again.reason == "client already submitted for round 5"
    results = board.close()
    assert list(results) == [0] and results[0].update.tolist() == [0.5, 0.5]


def test_a_revoked_client_process_stops_with_a_clear_error(served):
    _, _, port, certs = served
    with pytest.raises(FedloomError, match="refused us: client eve is revoked"):
        run_client(
            f"127.0.0.1:{port}",
            client_id="eve",
            data={"x": torch.zeros(3, 2), "y": torch.zeros(3, dtype=torch.long)},
            module=torch.nn.Linear(2, 2),
            credentials=channel_credentials(certs / "ca.pem"),
            token="t-eve",
        )


def test_the_status_line_counts_connected_clients_updates_and_refusals():
    from fedloom.net.status import status_text

    access = Access(("alice", "bob", "eve"), TOKENS)
    board = RoundBoard(access, LocalTraining(), max_tensor_bytes=1 << 16)
    board.join(0, 3)
    board.join(1, 3)
    board.open([ClientPlan(0, 4, 11), ClientPlan(1, 4, 12)], torch.zeros(2), torch.zeros(0))
    assert board.submit(0, _update(4)) is None
    assert "non-finite" in board.submit(1, _update(4, (float("nan"), 0.0)))
    line = status_text(board, rounds=10, done=4, accuracy=0.9, elapsed_s=3.2)
    assert line == "round 5/10 | 2/3 clients connected | 1/2 updates (1 refused) | acc 0.900 | 3 s"
    board.close()
    assert status_text(board, rounds=10, done=5, accuracy=None, elapsed_s=4) == (
        "round 6/10 | 2/3 clients connected | aggregating | 4 s"
    )
