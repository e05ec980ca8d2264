"""A deployed run stops on the same plateau as its simulation and keeps the same best model."""

import torch
from _harness import client_thread, serve_in_thread

from fedloom.config import RunConfig, build_federated
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart


def test_a_deployed_run_stops_early_like_the_simulation(tmp_path):
    clients = ["a", "b", "c"]
    write_quickstart(tmp_path, clients)
    config = RunConfig.from_dict(
        {
            "seed": 2,
            "rounds": 10,
            "data": {"dataset": "digits", "num_clients": 3, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 1, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "early_stopping": {"metric": "test_accuracy", "patience": 1, "min_delta": 0.05},
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
    deployed = outcome["history"]
    simulated = simulate_config(config.model_copy(update={"engine": "sequential"}))
    assert 1 < len(deployed.reports) < 10  # it stopped early, after an improvement
    assert len(deployed.reports) == len(simulated.reports)
    assert torch.allclose(deployed.final_state.params, simulated.final_state.params, atol=1e-6)
