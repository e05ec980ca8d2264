"""The deployed server samples its cohorts as configured: with ``server.sampling: poisson``
its cohorts, an empty one included, its noise, ledger and epsilon are the simulation's."""

import torch
from _harness import client_thread, serve_in_thread

from fedloom.config import RunConfig, build_federated
from fedloom.data.sampling import sample_cohort
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart


def test_a_deployed_poisson_dp_run_equals_its_simulation_empty_round_included(tmp_path):
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 1,
            "rounds": 3,
            "algorithm": {"name": "dp_fedavg", "clip_norm": 0.5, "noise_multiplier": 0.3},
            "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05},
            "server": {"fraction": 0.5, "sampling": "poisson"},
            "eval": {"clients": False},
            "deploy": {"dp_noise": "reproducible"},  # the simulation's noise
        }
    )
    sizes = [len(sample_cohort(4, 0.5, seed=1, round=t, sampling="poisson")) for t in range(3)]
    assert sizes == [2, 0, 3]  # round 2 samples nobody
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path)
    workers = [client_thread(config, data, tmp_path, c, k, outcome["port"]) for k, c in
               enumerate(clients)]  # fmt: skip
    server.join(timeout=120)
    for worker in workers:
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    history = outcome["history"]
    assert [r.metrics["num_clients"] for r in history.reports] == [2.0, 0.0, 3.0]
    assert [r.metrics["num_results"] for r in history.reports] == [2.0, 0.0, 3.0]
    simulation = simulate_config(config.model_copy(update={"engine": "sequential"}))
    spent = [r.metrics["dp_epsilon"] for r in history.reports]
    assert spent == [r.metrics["dp_epsilon"] for r in simulation.reports]
    ledger = history.final_state.aggregation["server"][0]
    assert (ledger["rounds"], ledger["sampling"], ledger["rate"]) == (3, "poisson", 0.5)
    reference = simulation.final_state.params
    assert torch.allclose(history.final_state.params, reference, atol=1e-6, rtol=0)
