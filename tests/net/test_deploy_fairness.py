"""Adversarial fairness deployed: `fedloom client` processes train the predictor and the
adversary through gradient reversal over real gRPC and the server ends where the simulation
does; alternating updates are refused with an error naming task.mode."""

import torch
import yaml
from _harness import client_process, serve_in_thread, simulated

from fedloom.cli import main
from fedloom.config import load_config
from fedloom.net.certs import write_quickstart

CONFIG = {
    "seed": 2,
    "rounds": 2,
    "data": {
        "dataset": "fair_synthetic",
        "num_clients": None,
        "partition": "natural",
        "holdout_fraction": 0.25,
        "fair_synthetic": {"num_clients": 2, "examples_per_client": 60, "test_size": 100},
    },
    "task": {"name": "adversarial_fairness", "lam": 1.5, "reads": "representation"},
    "client": {"steps": 4, "batch_size": 10, "lr": 0.1},
    "server": {"fraction": 1.0},
    "eval": {"clients": False},
}


def test_deployed_clients_train_against_the_adversary_like_the_simulation(tmp_path):
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    clients = ["c0", "c1"]
    write_quickstart(tmp_path / "certs", clients)
    config = load_config(config_path)
    deploy = config.deploy.model_copy(update={"round_timeout_s": 120})
    thread, outcome = serve_in_thread(
        config.model_copy(update={"deploy": deploy}), clients, tmp_path / "certs"
    )
    processes = [
        client_process(config_path, tmp_path / "certs", c, k, outcome["port"])
        for k, c in enumerate(clients)
    ]
    codes = [p.wait(timeout=300) for p, _ in processes]
    thread.join(timeout=120)
    assert codes == [0, 0], [output.rest() for _, output in processes]
    history = outcome["history"]
    assert torch.allclose(history.final_state.params, simulated(config).params, atol=1e-6, rtol=0)
    last = history.reports[-1].metrics
    assert {"test_adversary_accuracy", "test_demographic_parity_gap"} <= set(last)


def test_the_deployed_server_refuses_alternating_updates(tmp_path, capsys):
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                 for k, v in (("data", CONFIG["data"]), ("task", CONFIG["task"]))]  # fmt: skip
    args = [a for o in [*overrides, "task.mode=alternating"] for a in ("--set", o)]
    code = main(["server", "--insecure", "--runs-dir", str(tmp_path / "runs"), *args])
    assert code == 2
    assert "task.mode: alternating updates run in simulation only" in capsys.readouterr().err
