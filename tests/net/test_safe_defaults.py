"""Deployment is safe by default: an insider's huge update is refused relative to the round's
median norm, the server says at start which protections are on, and turning one off is a
loud warning."""

import logging
import time

import grpc
import torch
from _harness import client_thread, serve_in_thread

from fedloom.algorithms import fedavg, server_init, server_update
from fedloom.client import LocalContext
from fedloom.config import RunConfig, build_federated, build_local_training, build_model
from fedloom.engine import plans_for_round
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.tls import channel_credentials
from fedloom.params import flatten_buffers, flatten_params
from fedloom.sim import SequentialExecutor
from fedloom.simulation import initial_module

CLIENTS = ["alice", "bob", "mallory"]


def _config(**validation):
    return RunConfig.model_validate(
        {
            "seed": 5,
            "rounds": 1,
            "data": {"dataset": "digits", "num_clients": 3, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 3, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0, "validation": validation},
            "eval": {"clients": False},
            "deploy": {"round_timeout_s": 60},
        }
    )


def _mallory_submits(port, certs, scale):
    """Join, wait for the task, send a valid-looking update ``scale`` times too large."""
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}",
        channel_credentials(certs / "ca.pem", certs / "client-mallory.pem",
                            certs / "client-mallory.key"),
    )  # fmt: skip
    stub = rpc.FederationStub(channel)
    stub.Join(pb.JoinRequest(num_examples=10), timeout=10)
    task = stub.GetTask(pb.TaskRequest(), timeout=10)
    while task.kind != "train":
        time.sleep(0.05)
        task = stub.GetTask(pb.TaskRequest(), timeout=10)
    update = pb.Update(
        round=task.round, update=encode_tensor(torch.full((4810,), scale)),
        buffers=encode_tensor(torch.zeros(0)), num_examples=10, num_steps=3,
        num_example_passes=30, train_loss=1.0,
    )  # fmt: skip
    ack = stub.SubmitUpdate(update, timeout=10)
    channel.close()
    return ack


def _run(tmp_path, config, scale):
    write_quickstart(tmp_path, CLIENTS)
    data = build_federated(config)
    server, outcome = serve_in_thread(config, CLIENTS, tmp_path)
    honest = [client_thread(config, data, tmp_path, c, k, outcome["port"])
              for k, c in enumerate(CLIENTS[:2])]  # fmt: skip
    assert _mallory_submits(outcome["port"], tmp_path, scale).accepted  # valid on arrival
    server.join(timeout=120)
    for thread in honest:
        thread.join(timeout=60)
    return data, outcome["history"]


def _honest_only(config, data):
    """The model after round 1 from alice's and bob's updates alone."""
    module = initial_module(build_model(config, data.dataset), seed=config.seed)
    params, buffers = flatten_params(module), flatten_buffers(module)
    plans = [p for p in plans_for_round(3, 1.0, seed=config.seed, round=0) if p.client_id < 2]
    results = SequentialExecutor(module, data, build_local_training(config.client)).fit(
        plans, params, {p.client_id: buffers for p in plans}, LocalContext(params)
    )
    return server_update(fedavg(), server_init(fedavg(), params, buffers), results).params


def test_an_insiders_huge_update_is_refused_by_default(tmp_path, caplog):
    config = _config()
    with caplog.at_level(logging.INFO, logger="fedloom"):
        data, history = _run(tmp_path, config, scale=1.0)  # norm 69: hundreds of x the median
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "update protections:" in m and "norm <= 10 x the round's median" in m
        and "example counts capped at 10 x the round's median" in m
        for m in messages
    )  # fmt: skip
    refusal = [m for m in messages if "rejected the update of client 2" in m]
    assert refusal and "exceeds 10 x the round's median norm" in refusal[0]
    metrics = history.reports[0].metrics
    assert (metrics["num_results"], metrics["num_rejected"]) == (2.0, 1.0)
    expected = _honest_only(config, data)
    assert torch.allclose(history.final_state.params, expected, atol=1e-6, rtol=0)


def test_turning_the_protection_off_is_a_loud_warning_and_lets_the_update_in(tmp_path, caplog):
    config = _config(max_norm_ratio="off")
    with caplog.at_level(logging.INFO, logger="fedloom"):
        data, history = _run(tmp_path, config, scale=1.0)
    assert any(
        r.levelno == logging.WARNING and "UNSAFE: server.validation.max_norm_ratio is off"
        in r.getMessage() for r in caplog.records
    )  # fmt: skip
    assert history.reports[0].metrics["num_results"] == 3.0  # what the old default did
    assert not torch.allclose(history.final_state.params, _honest_only(config, data), atol=1e-3)
