"""DP-FedAvg's adaptive clipping and local DP over a real TLS gRPC server: the deployed run
equals its simulation, the clip norm and the epsilons included; with local DP the clients
clip and noise (the server ships them the transform as data and only averages), and unless
told to reproduce a simulation they mix a secret of their own into the noise, so that the
server cannot regenerate it; an update that skipped the transforms is refused."""

import pytest
import torch
from _harness import client_thread, serve_in_thread

from fedloom.client import ClientProgram, LocalTraining
from fedloom.config import RunConfig, build_algorithm, build_federated
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import encode_tensor
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.server import Access, RoundBoard
from fedloom.privacy.local_dp import LocalGaussian
from fedloom.types import ClientPlan


@pytest.mark.parametrize(
    ("options", "metrics", "reproducible"),
    [
        ({"local_dp": True}, ("dp_local_epsilon",), True),
        ({"local_dp": True}, ("dp_local_epsilon",), False),
        ({"target_quantile": 0.5, "clipped_count_stddev": 1.0}, ("dp_epsilon", "dp_clip_norm"),
         True),
        ({}, ("dp_epsilon",), False),
    ],
    ids=["local-dp", "local-dp-secret-noise", "adaptive-clipping", "central-secret-noise"],
)  # fmt: skip
def test_a_deployed_private_run_equals_its_simulation_but_for_secret_noise(
    tmp_path, options, metrics, reproducible
):
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    algorithm = {"name": "dp_fedavg", "clip_norm": 0.5, "noise_multiplier": 0.3, **options}
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
            # the server's own noise: from the run seed alone only when reproducible
            "deploy": {"dp_noise": "reproducible" if reproducible else "secret"},
        }
    )
    if options.get("local_dp"):  # the server's pipeline has no clipping and no noise
        built = build_algorithm(config)
        assert built.client_program().update_transforms == (LocalGaussian(0.5, 0.3),)
        assert [s.name for s in built.aggregation.per_client] == ["local_dp"]
        assert [s.name for s in built.aggregation.server] == ["identity"]  # server.lr 1
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path)
    workers = [
        client_thread(
            config, data, tmp_path, c, k, outcome["port"], reproducible_noise=reproducible
        )
        for k, c in enumerate(clients)
    ]
    server.join(timeout=120)
    for worker in workers:
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    deployed = outcome["history"]
    simulated = simulate_config(config.model_copy(update={"engine": "sequential"}))
    final = (deployed.final_state.params, simulated.final_state.params)
    same = torch.allclose(*final, atol=1e-6, rtol=0)
    # the noise (the clients' with local DP, the server's otherwise) is the simulation's only
    # when the secret is dropped; the privacy spent is the same either way
    assert same == reproducible
    if reproducible or options.get("local_dp"):
        assert deployed.final_state.aggregation == simulated.final_state.aggregation  # ledgers
    else:  # the central ledger is the same; the noised model is not
        ledger = deployed.final_state.aggregation["server"][0]
        assert ledger == simulated.final_state.aggregation["server"][0]
    for name in metrics:
        assert [r.metrics[name] for r in deployed.reports] == [
            r.metrics[name] for r in simulated.reports
        ]


def test_an_update_that_skipped_the_programs_transforms_is_refused():
    """A client too old to know the program's update transforms would send its update
    unnoised; the server refuses any update that does not name them as applied."""
    program = ClientProgram(update_transforms=(LocalGaussian(1.0, 1.0),))
    board = RoundBoard(
        Access(("alice", "bob")), LocalTraining(), max_tensor_bytes=1 << 16, program=program
    )
    board.open([ClientPlan(0, 0, 11), ClientPlan(1, 0, 12)], torch.zeros(2), torch.zeros(0))
    assert [t.name for t in board.task_for(0).program.update_transforms] == ["local_dp"]

    def update(*applied):
        return pb.Update(
            round=0, update=encode_tensor(torch.tensor([0.5, 0.5])),
            buffers=encode_tensor(torch.zeros(0)), num_examples=3, num_steps=1,
            num_example_passes=3, train_loss=1.0, update_transforms=applied,
        )  # fmt: skip

    assert board.submit(0, update()) == (
        "the update went through transforms [], the program asks for ['local_dp']: an "
        "outdated or misbehaving client"
    )
    assert board.submit(1, update("local_dp")) is None
    assert set(board.close()) == {1}
