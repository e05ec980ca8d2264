"""Updates over a real TLS gRPC server: bad ones are refused and logged and never touch the
model; algorithms with client state (SCAFFOLD, FedNova) match their simulation."""

import logging
import threading
import time

import grpc
import pytest
import torch
from _harness import client_thread, serve_in_thread, simulated

from fedloom.client import LocalContext
from fedloom.client.store import OwnState
from fedloom.config import (
    RunConfig,
    build_federated,
    build_local_training,
    build_model,
)
from fedloom.engine import Callback, plans_for_round
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.tls import channel_credentials
from fedloom.params import flatten_buffers, flatten_params
from fedloom.sim import SequentialExecutor
from fedloom.simulation import initial_module


class Rounds(Callback):
    def __init__(self):
        self.finished = threading.Event()

    def on_round(self, report, state):
        self.finished.set()


def _update(round_, values, *, dtype=None):
    message = pb.Update(
        round=round_,
        update=encode_tensor(values),
        buffers=encode_tensor(torch.zeros(0)),
        num_examples=10,
        num_steps=3,
        num_example_passes=30,
        train_loss=1.0,
    )
    if dtype:
        message.update.dtype = dtype
    return message


def test_malformed_oversized_nan_and_wrong_shape_updates_are_refused_and_logged(tmp_path, caplog):
    write_quickstart(tmp_path, ["honest", "mallory"])
    config = RunConfig.model_validate(
        {
            "seed": 5,
            "rounds": 1,
            "data": {"dataset": "digits", "num_clients": 2, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 3, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "deploy": {"close_early": True, "min_fit_clients": 1, "max_message_mb": 0.1},
        }
    )
    data = build_federated(config)
    rounds = Rounds()
    with caplog.at_level(logging.INFO, logger="fedloom"):
        server, outcome = serve_in_thread(
            config, ["honest", "mallory"], tmp_path, callbacks=[rounds]
        )
        channel = grpc.secure_channel(
            f"127.0.0.1:{outcome['port']}",
            channel_credentials(tmp_path / "ca.pem", tmp_path / "client-mallory.pem",
                                tmp_path / "client-mallory.key"),
        )  # fmt: skip
        stub = rpc.FederationStub(channel)
        stub.Join(pb.JoinRequest(num_examples=10), timeout=10)
        task = stub.GetTask(pb.TaskRequest(), timeout=10)
        while task.kind != "train":
            time.sleep(0.05)
            task = stub.GetTask(pb.TaskRequest(), timeout=10)
        size = task.params.ByteSize() // 4  # 4,810 parameters
        with pytest.raises(grpc.RpcError) as too_big:
            stub.SubmitUpdate(_update(0, torch.zeros(60_000)), timeout=10)  # 240 kB > 0.1 MB
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in too_big.value.details()
        reasons = [
            stub.SubmitUpdate(update, timeout=10).reason
            for update in (
                _update(0, torch.zeros(4810), dtype="object"),
                _update(0, torch.zeros(4811)),
                _update(0, torch.full((4810,), float("nan"))),
                _update(0, torch.zeros(4810)),  # valid, but after three refusals
            )
        ]
        assert size >= 4810
        assert reasons[0].startswith("malformed update: unknown dtype 'object'")
        assert reasons[1] == "malformed update: tensor has shape (4811,), expected (4810,)"
        assert reasons[2] == "update has 4810 non-finite values (NaN or inf)"
        assert reasons[3] == "too many refused updates in round 1"

        honest = client_thread(config, data, tmp_path, "honest", 0, outcome["port"])
        assert rounds.finished.wait(60)  # closed early: its one valid update is enough
        late = stub.SubmitUpdate(_update(0, torch.zeros(4810)), timeout=10)
        assert late.reason == "late: round 1 already closed"
        stub.GetTask(pb.TaskRequest(), timeout=10)  # hears "done"
        channel.close()
        server.join(timeout=60)
        honest.join(timeout=60)

    history = outcome["history"]
    metrics = history.reports[0].metrics
    assert (metrics["num_results"], metrics["num_failures"]) == (1.0, 1.0)
    # the new model is the honest update alone: nothing of mallory's touched it
    module = initial_module(build_model(config, data.dataset), seed=5)
    params, buffers = flatten_params(module), flatten_buffers(module)
    plan = next(p for p in plans_for_round(2, 1.0, seed=5, round=0) if p.client_id == 0)
    settings = build_local_training(config.client)
    (expected,) = SequentialExecutor(module, data, settings).fit(
        [plan], params, {0: buffers}, LocalContext(params)
    )
    assert torch.allclose(history.final_state.params, params + expected.update, atol=1e-6)
    refusals = [
        r.getMessage() for r in caplog.records if "rejected the update of mallory" in r.getMessage()
    ]
    assert len(refusals) == 5  # four in the round, one late; each with its reason
    assert any("non-finite" in r for r in refusals) and any("late" in r for r in refusals)


@pytest.mark.parametrize(
    ("algorithm", "compress", "client_state"),
    [
        ({"name": "scaffold"}, True, "client"),
        ({"name": "scaffold"}, False, "server"),
        ({"name": "fednova"}, False, "client"),
        ({"name": "fedprox", "mu": 0.5}, False, "client"),
        ({"name": "feddyn", "alpha": 0.1}, False, "client"),
        ({"name": "dp_fedavg", "clip_norm": 0.5, "noise_multiplier": 0.3}, False, "client"),
    ],
    ids=["scaffold-compressed", "scaffold-server-state", "fednova", "fedprox", "feddyn", "dp"],
)
def test_algorithms_with_client_state_match_their_simulation_over_the_wire(
    tmp_path, algorithm, compress, client_state
):
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 7,
            "rounds": 3,
            "algorithm": algorithm,
            "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05, "momentum": 0.5},
            "server": {"fraction": 0.5},
            "eval": {"clients": False},
            # DP noise from the run seed alone, so that it equals the simulation's
            "deploy": {
                "compress": compress,
                "client_state": client_state,
                "dp_noise": "reproducible",
            },
        }
    )
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path)
    state_files = [tmp_path / f"state-{c}.safetensors" for c in clients]
    workers = [
        client_thread(config, data, tmp_path, c, k, outcome["port"], state_files[k])
        for k, c in enumerate(clients)
    ]
    server.join(timeout=120)
    for worker in workers:
        worker.join(timeout=60)
    reference = simulated(config)
    networked = outcome["history"].final_state
    if algorithm["name"] == "dp_fedavg":  # the same noise, the same ledger, the same epsilon
        simulated_run = simulate_config(config.model_copy(update={"engine": "sequential"}))
        spent = [r.metrics["dp_epsilon"] for r in outcome["history"].reports]
        assert spent == [r.metrics["dp_epsilon"] for r in simulated_run.reports]
        assert networked.aggregation["server"][0]["rounds"] == 3
    assert torch.allclose(networked.params, reference.params, atol=1e-6, rtol=0)
    if networked.algorithm is not None:  # SCAFFOLD's c
        assert torch.allclose(networked.algorithm, reference.algorithm, atol=1e-6, rtol=0)
    # c_k, FedDyn's g_k: on the server, or each in its own client's file (and nowhere else)
    if client_state == "server":
        held = dict(networked.clients)
        assert not any(f.exists() for f in state_files)
    else:
        held = {k: OwnState(f).entries for k, f in enumerate(state_files) if f.exists()}
        assert networked.clients == {}
    assert held.keys() == reference.clients.keys()
    assert held or algorithm["name"] in ("fednova", "fedprox", "dp_fedavg")
    for client, entries in reference.clients.items():
        assert held[client].keys() == entries.keys()
        for name, value in entries.items():
            assert torch.allclose(held[client][name], value, atol=1e-6, rtol=0)
    if not compress:  # the measured payload of round 1: two clients, 4,810-float vectors
        first = outcome["history"].reports[0].metrics
        scaffold = algorithm["name"] == "scaffold"  # down: c or c - c_k; up: c_k+ - c_k
        vectors = {
            "wire_bytes_down": 1 + scaffold,
            "wire_bytes_up": 1 + (scaffold and client_state == "client"),
        }
        for key, count in vectors.items():
            assert count * 2 * 4 * 4810 < first[key] < count * 2 * 4 * 4810 + 1000, (
                key,
                first[key],
            )


def test_a_round_short_of_min_fit_clients_waits_another_deadline_for_a_late_client(
    tmp_path, caplog
):
    clients = ["early", "late"]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 3,
            "rounds": 1,
            "data": {"dataset": "digits", "num_clients": 2, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 2, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            # join_timeout_s: start the round after 1 s without the late client
            "deploy": {"round_timeout_s": 2, "min_fit_clients": 2, "retries": 5,
                       "join_timeout_s": 1},
        }
    )  # fmt: skip
    data = build_federated(config)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        server, outcome = serve_in_thread(config, clients, tmp_path)
        early = client_thread(config, data, tmp_path, "early", 0, outcome["port"])
        time.sleep(3)  # past the join timeout and the first deadline
        late = client_thread(config, data, tmp_path, "late", 1, outcome["port"])
        server.join(timeout=60)
        early.join(timeout=30)
        late.join(timeout=30)
    metrics = outcome["history"].reports[0].metrics
    assert metrics["num_results"] == 2.0  # both, thanks to the extra deadline
    assert (
        "round 1: 1 of 2 needed valid updates by the deadline; waiting another 2 s" in caplog.text
    )
    assert torch.allclose(
        outcome["history"].final_state.params, simulated(config).params, atol=1e-6
    )


def test_a_rounds_deadline_starts_when_its_clients_have_joined_not_at_server_start(
    tmp_path, caplog
):
    """Clients that start 4 s after the server, with a 2 s deadline and no retries: the
    deadline used to run from the server's start, and the run stopped starved."""
    clients = ["slow-a", "slow-b"]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 3,
            "rounds": 2,
            "data": {"dataset": "digits", "num_clients": 2, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 2, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "deploy": {"round_timeout_s": 2, "min_fit_clients": 2, "retries": 0},
        }
    )
    data = build_federated(config)
    with caplog.at_level(logging.INFO, logger="fedloom"):
        server, outcome = serve_in_thread(config, clients, tmp_path)
        time.sleep(4)  # two deadlines' worth of start-up
        threads = [
            client_thread(config, data, tmp_path, c, k, outcome["port"])
            for k, c in enumerate(clients)
        ]
        server.join(timeout=120)
        for thread in threads:
            thread.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert [r.metrics["num_results"] for r in outcome["history"].reports] == [2.0, 2.0]
    assert "round 1: the cohort formed after" in caplog.text
