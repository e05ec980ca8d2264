"""Crashes with real processes on loopback: a client and the server are killed with SIGKILL."""

import json
import logging
import signal
import threading
import time

import torch
import yaml
from _harness import client_process, fedloom, free_port, patient, serve_in_thread, simulated
from safetensors.torch import load_file

import fedloom as fl
from fedloom.config import load_config
from fedloom.engine import Callback
from fedloom.net.certs import write_quickstart
from fedloom.params import flatten_params


class RoundDone(Callback):
    def __init__(self):
        self.done = {}

    def on_round(self, report, state):
        self.done.setdefault(report.round, threading.Event()).set()

    def wait(self, round_, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if round_ in self.done:
                return
            time.sleep(0.05)
        raise AssertionError(f"round {round_} did not finish in {timeout} s")


def test_a_client_killed_mid_round_does_not_block_the_round_and_rejoins(tmp_path, caplog):
    clients = [f"client-{k}" for k in range(4)]
    write_quickstart(tmp_path / "certs", clients)
    certs = tmp_path / "certs"
    raw = {
        "seed": 1,
        "rounds": 4,
        "data": {"dataset": "digits", "num_clients": 4, "partition": "iid"},
        "model": {"name": "digits_mlp"},
        "client": {"steps": 3, "batch_size": 10, "lr": 0.05},
        "server": {"fraction": 1.0},
        "eval": {"clients": False},
        # the deadline runs from when the four clients have joined (the cohort formed), and
        # is scaled to the machine's measured speed
        "deploy": {"round_timeout_s": patient(8), "min_fit_clients": 3},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    port = free_port()
    rounds = RoundDone()
    with caplog.at_level(logging.INFO, logger="fedloom"):
        server, outcome = serve_in_thread(
            config, clients, certs, address=f"127.0.0.1:{port}", callbacks=[rounds]
        )
        steady = [
            client_process(config_path, certs, c, k, port)[0] for k, c in enumerate(clients[:3])
        ]
        # a slow device: it takes its task, then dies while "training"
        doomed, doomed_output = client_process(
            config_path, certs, "client-3", 3, port, "--delay", "60"
        )
        doomed_output.wait_for("client-3: training round 1", timeout=patient(120))
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        rounds.wait(1, timeout=patient(60))  # closed at the deadline with the three others
        back, back_output = client_process(config_path, certs, "client-3", 3, port)  # it comes back
        server.join(timeout=180)
        assert back.wait(timeout=120) == 0, back_output.rest()
        for process in steady:
            assert process.wait(timeout=60) == 0
    history = outcome["history"]
    per_round = [(r.metrics["num_results"], r.metrics["num_failures"]) for r in history.reports]
    assert per_round[0] == (3.0, 1.0)  # the round completed without the killed client
    assert (4.0, 0.0) in per_round[1:]  # and it took part again after coming back
    assert "trained" in back_output.rest()
    log = caplog.text
    assert "round 1: client client-3 dropped out (no update)" in log
    assert "client client-3 rejoined" in log or log.count("client client-3 joined") == 1


def test_the_server_killed_after_round_2_resumes_and_ends_with_the_uninterrupted_model(tmp_path):
    clients = [f"client-{k}" for k in range(4)]
    write_quickstart(tmp_path / "certs", clients)
    certs = tmp_path / "certs"
    raw = {
        "seed": 2,
        "rounds": 5,
        "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
        "model": {"name": "digits_mlp"},
        "client": {"steps": 4, "batch_size": 10, "lr": 0.05},
        "server": {"fraction": 0.75},
        "algorithm": {"name": "fedavgm", "momentum": 0.9},  # server state beyond the model
        "eval": {"clients": False},
        "deploy": {"round_timeout_s": 120},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    port = free_port()
    command = (
        "server", "--config", str(config_path), "--certs", str(certs),
        "--address", f"127.0.0.1:{port}", "--runs-dir", str(tmp_path / "runs"), "--name", "r",
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "r"
    server, server_output = fedloom(*command)
    # clients that wait a second before each submission keep every round over a second long
    workers = [
        client_process(config_path, certs, c, k, port, "--delay", "1")[0]
        for k, c in enumerate(clients)
    ]
    server_output.wait_for("round 2/5:", timeout=patient(180))
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    header = json.loads(
        __import__("safetensors")
        .safe_open(str(run_dir / "checkpoint.safetensors"), framework="pt")
        .metadata()["header"]
    )
    assert header["rounds_done"] == 2  # killed after round 2, before round 3 ended

    restarted, restarted_output = fedloom(*command)  # the same command
    assert restarted.wait(timeout=300) == 0, restarted_output.rest()
    text = restarted_output.rest()
    assert "resumed from the checkpoint after round 2" in text and "run over: 5 rounds" in text
    assert "round 3/5:" in text and "round 2/5:" not in text  # it trained rounds 3-5 only
    for worker in workers:
        assert worker.wait(timeout=60) == 0

    # the uninterrupted run: the same config, simulated in one go
    config = load_config(config_path)
    uninterrupted = simulated(config).params
    saved = load_file(str(run_dir / "model.safetensors"))
    module = fl.models.digits_mlp()
    module.load_state_dict({k: v for k, v in saved.items()}, strict=True)
    assert torch.allclose(flatten_params(module), uninterrupted, atol=1e-6, rtol=0)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4, 5]
    # the same command once more: nothing to do, and it says so instead of waiting for clients
    again, again_output = fedloom(*command)
    assert again.wait(timeout=120) == 0
    assert "is already complete (5 rounds)" in again_output.rest()
