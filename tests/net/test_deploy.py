"""One server and real client processes on loopback, with TLS and client certificates."""

import os
import subprocess
import sys
import threading

import pytest
import torch
import yaml

import fedloom as fl
from fedloom.config import (
    build_algorithm,
    build_federated,
    build_local_training,
    build_model,
    load_config,
)
from fedloom.net.certs import write_quickstart
from fedloom.net.deploy import serve
from fedloom.net.server import Access, RoundStarved
from fedloom.net.tls import server_credentials

CONFIG = {
    "seed": 4,
    "rounds": 3,
    "data": {"dataset": "mnist", "num_clients": 10, "partition": "iid"},
    "model": {"name": "mnist_2nn"},
    "client": {"steps": 5, "batch_size": 10, "lr": 0.05},
    "server": {"fraction": 0.5},
    "eval": {"clients": False},
}


@pytest.fixture
def setup(tmp_path, mnist):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    clients = [f"c{k}" for k in range(10)]
    write_quickstart(tmp_path / "certs", clients)
    return config_path, clients, tmp_path / "certs"


def _client(config_path, certs, client_id, index, port, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "fedloom.cli", "client", "--config", str(config_path),
         "--server", f"127.0.0.1:{port}", "--client-id", client_id, "--index", str(index),
         "--certs", str(certs), *extra],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _serve_in_thread(config, clients, certs, **deploy):
    started = threading.Event()
    outcome = {}
    config = config.model_copy(update={"deploy": config.deploy.model_copy(update=deploy)})

    def target():
        try:
            outcome["history"] = serve(
                config,
                address="127.0.0.1:0",
                access=Access(tuple(clients)),
                credentials=server_credentials(
                    certs / "server.pem", certs / "server.key", certs / "ca.pem"
                ),
                on_listening=lambda port: (outcome.__setitem__("port", port), started.set()),
            )
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(60)
    return thread, outcome


@pytest.mark.mnist
def test_ten_client_processes_reproduce_the_simulation(setup):
    config_path, clients, certs = setup
    config = load_config(config_path)
    thread, outcome = _serve_in_thread(config, clients, certs, round_timeout_s=120)
    processes = [_client(config_path, certs, c, k, outcome["port"]) for k, c in enumerate(clients)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    thread.join(timeout=120)
    assert all(p.returncode == 0 for p in processes), outputs
    networked = outcome["history"].final_state.params
    # the same run, simulated
    data = build_federated(config)
    simulated = fl.simulate(
        build_algorithm(config, data.num_clients),
        data,
        build_model(config, data.dataset),
        rounds=3,
        fraction=0.5,
        local=build_local_training(config.client),
        seed=4,
        engine="sequential",
        eval_clients=False,
    ).final_state.params
    assert torch.allclose(networked, simulated, atol=1e-6, rtol=0)
    assert sum("trained 3 rounds" in o or "trained" in o for o in outputs) == 10


@pytest.mark.mnist
def test_clients_without_valid_credentials_are_refused(setup, tmp_path):
    config_path, clients, certs = setup
    config = load_config(config_path)
    thread, outcome = _serve_in_thread(config, clients, certs, round_timeout_s=2, retries=1)
    port = outcome["port"]
    write_quickstart(tmp_path / "other", ["c0"])  # a certificate from another CA
    give_up = ("--give-up-after", "5")
    forged = _client(config_path, tmp_path / "other", "c0", 0, port, *give_up)
    plaintext = _client(config_path, certs, "c1", 1, port, "--insecure", *give_up)
    for process in (forged, plaintext):
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 1, output
        assert "refused our TLS credentials" in output and "trained" not in output
    thread.join(timeout=60)
    # refused at connect: nobody joined, no update arrived, and the server stopped cleanly
    # after the first round's deadline and one retry
    assert isinstance(outcome["error"], RoundStarved)
    assert "round 1: 0 valid update(s), 1 needed" in str(outcome["error"])
    assert "0 of 10 clients connected" in str(outcome["error"])
