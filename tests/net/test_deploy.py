"""One server and real client processes on loopback, with TLS and client certificates."""

import pytest
import torch
import yaml
from _harness import client_process, serve_in_thread, simulated

from fedloom.config import load_config
from fedloom.net.certs import write_quickstart
from fedloom.net.server import RoundStarved

CONFIG = {
    "seed": 4,
    "rounds": 3,
    "data": {"dataset": "mnist", "num_clients": 10, "partition": "iid"},
    "model": {"name": "mnist_2nn"},
    "client": {"steps": 5, "batch_size": 10, "lr": 0.05},
    "server": {"fraction": 0.5},
    "eval": {"clients": False},
}


def _deploy(config, **settings):
    return config.model_copy(update={"deploy": config.deploy.model_copy(update=settings)})


@pytest.fixture
def setup(tmp_path, mnist):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    clients = [f"c{k}" for k in range(10)]
    write_quickstart(tmp_path / "certs", clients)
    return config_path, clients, tmp_path / "certs"


@pytest.mark.mnist
def test_ten_client_processes_reproduce_the_simulation(setup):
    config_path, clients, certs = setup
    config = load_config(config_path)
    thread, outcome = serve_in_thread(_deploy(config, round_timeout_s=120), clients, certs)
    processes = [
        client_process(config_path, certs, c, k, outcome["port"]) for k, c in enumerate(clients)
    ]
    codes = [p.wait(timeout=300) for p, _ in processes]
    outputs = [output.rest() for _, output in processes]
    thread.join(timeout=120)
    assert codes == [0] * 10, outputs
    networked = outcome["history"].final_state.params
    assert torch.allclose(networked, simulated(config).params, atol=1e-6, rtol=0)
    trained = [int(o.split(": trained ")[1].split()[0]) for o in outputs]
    assert sum(trained) == 3 * 5  # five clients a round (C = 0.5), three rounds


@pytest.mark.mnist
def test_clients_without_valid_credentials_are_refused(setup, tmp_path):
    config_path, clients, certs = setup
    config = load_config(config_path)
    thread, outcome = serve_in_thread(
        _deploy(config, round_timeout_s=2, retries=1, join_timeout_s=2), clients, certs
    )
    port = outcome["port"]
    write_quickstart(tmp_path / "other", ["c0"])  # a certificate from another CA
    give_up = ("--give-up-after", "5")
    forged = client_process(config_path, tmp_path / "other", "c0", 0, port, *give_up)
    plaintext = client_process(config_path, certs, "c1", 1, port, "--insecure", *give_up)
    for process, collected in (forged, plaintext):
        code = process.wait(timeout=120)
        output = collected.rest()
        assert code == 1, output
        assert "refused our TLS credentials" in output and "trained" not in output
    thread.join(timeout=60)
    # refused at connect: nobody joined, no update arrived, and the server stopped cleanly
    # after the first round's deadline and one retry
    assert isinstance(outcome["error"], RoundStarved)
    assert "round 1: 0 valid update(s), 1 needed" in str(outcome["error"])
    assert "0 of 10 clients connected" in str(outcome["error"])
