"""Compression over a real TLS gRPC server on loopback: the clients compress their updates
(QSGD or top-k, with error feedback kept on the client) and decode a compressed broadcast;
the deployed run equals its simulation, its bytes metrics count the codes, and the protobuf
payload actually shrinks. The server refuses an update not compressed as the program says,
and a code it did not write."""

import numpy as np
import pytest
import torch
from _harness import client_thread, serve_in_thread

from fedloom.client import ClientProgram, LocalTraining
from fedloom.compress import Compression, IntQuantizer, TopK
from fedloom.config import RunConfig, build_federated
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import encode_code, encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.server import Access, RoundBoard
from fedloom.types import ClientPlan


@pytest.mark.parametrize(
    "compression",
    [
        {"kind": "qsgd", "levels": 4, "error_feedback": True, "download": "int8"},
        {"kind": "topk", "fraction": 0.05, "error_feedback": True, "download": "bf16"},
    ],
    ids=["qsgd-ef-int8-broadcast", "topk-ef-bf16-broadcast"],
)
def test_a_compressed_deployed_run_equals_its_simulation(tmp_path, compression):
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 5,
            "rounds": 3,
            "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05, "compression": compression},
            "server": {"fraction": 0.5},
            "eval": {"clients": False},
        }
    )
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path)
    workers = [
        client_thread(config, data, tmp_path, c, k, outcome["port"]) for k, c in enumerate(clients)
    ]
    server.join(timeout=120)
    for worker in workers:
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    deployed = outcome["history"]
    simulated = simulate_config(config.model_copy(update={"engine": "sequential"}))
    assert torch.allclose(
        deployed.final_state.params, simulated.final_state.params, atol=1e-6, rtol=0
    )
    num_params = deployed.final_state.params.numel()
    for ours, theirs in zip(deployed.reports, simulated.reports, strict=True):
        for name in ("bytes_up", "bytes_down", "num_results"):
            assert ours.metrics[name] == theirs.metrics[name]
        # the protobuf payload: the codes plus a few hundred bytes of framing and counts
        per_update = ours.metrics["wire_bytes_up"] / ours.metrics["num_results"]
        code = ours.metrics["bytes_up"] / ours.metrics["num_results"]
        assert code < per_update < code + 400 < 4 * num_params


def _update(**fields):
    return pb.Update(
        round=0, buffers=encode_tensor(torch.zeros(0)), num_examples=3, num_steps=1,
        num_example_passes=3, train_loss=1.0, **fields,
    )  # fmt: skip


def test_an_update_not_compressed_as_the_program_says_is_refused():
    program = ClientProgram(compression=Compression(upload=TopK(k=2), error_feedback=True))
    board = RoundBoard(
        Access(("alice", "bob", "carol")), LocalTraining(), max_tensor_bytes=1 << 16,
        program=program,
    )  # fmt: skip
    plans = [ClientPlan(k, 0, 11 + k) for k in range(3)]
    board.open(plans, torch.zeros(100), torch.zeros(0))
    task = board.task_for(0)
    assert task.program.upload_compression.name == "compress/topk"
    assert task.program.error_feedback
    plain = _update(update=encode_tensor(torch.ones(100)))
    assert "not compressed with compress/topk" in board.submit(0, plain)
    code = TopK(k=2).encode(torch.arange(100.0))
    forged = encode_code(code)
    forged.parts["indices"] = np.array([5, 5], "<u4").tobytes()  # the same index twice
    assert "bad compress/topk code" in board.submit(1, _update(compressed_update=forged))
    assert board.submit(2, _update(compressed_update=encode_code(code))) is None
    results = board.close()
    assert set(results) == {2}
    assert results[2].update.nonzero().flatten().tolist() == [98, 99]


def test_a_compressed_broadcast_is_sent_as_a_code():
    program = ClientProgram(compression=Compression(download=IntQuantizer()))
    board = RoundBoard(Access(("a",)), LocalTraining(), max_tensor_bytes=1 << 16, program=program)
    board.open([ClientPlan(0, 0, 1)], torch.linspace(-1, 1, 1000), torch.zeros(0))
    task = board.task_for(0)
    assert task.params.data == b"" and task.compressed_params.kind == "compress/int"
    assert sum(len(p) for p in task.compressed_params.parts.values()) == 1000 + 4
