"""Personal state deployed: FedPer, FedRep, FedBN and Ditto over real gRPC on 127.0.0.1 end
where their simulation ends, every client's personal values (or Ditto's personal model, or
FedBN's running statistics) are in its own state file and nowhere else, and no update the
server receives carries a personal coordinate (or, under FedBN, a buffer value)."""

import pytest
import torch
from _harness import client_thread, serve_in_thread

from fedloom.algorithms.personal import PERSONAL_MODEL, PERSONAL_VALUES, with_model
from fedloom.algorithms.personal_client import PERSONAL_BUFFERS
from fedloom.client.store import OwnState
from fedloom.config import RunConfig, build_federated, build_model
from fedloom.config.spec import build_run
from fedloom.engine import Checkpoints
from fedloom.experiment import simulate_config
from fedloom.net.board import RoundBoard
from fedloom.net.certs import write_quickstart
from fedloom.net.codec import decode_tensor
from fedloom.params import flatten_params
from fedloom.simulation import initial_module

CASES = {
    "fedper": ({"name": "fedper", "personal": ["3.*"]}, "digits_mlp", "average"),
    "fedrep": ({"name": "fedrep", "personal": ["3.*"], "head_steps": 3}, "digits_mlp", "average"),
    "fedbn": ({"name": "fedbn"}, "digits_cnn_bn", "local"),
    "ditto": ({"name": "ditto", "lam": 0.5, "personal_steps": 3}, "digits_mlp", "average"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_deployed_personal_state_matches_the_simulation_and_stays_on_the_clients(
    tmp_path, monkeypatch, name
):
    algorithm, model, buffers = CASES[name]
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 7,
            "rounds": 3,
            "algorithm": algorithm,
            "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
            "model": {"name": model, "buffers": buffers},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05, "momentum": 0.5},
            "server": {"fraction": 0.5},
            "eval": {"clients": False},
        }
    )
    received = []  # every update the server's board is handed, as the bytes decode
    received_buffers = []
    submit = RoundBoard.submit

    def recording(self, index, update):
        received.append(decode_tensor(update.update, max_bytes=2**24))
        received_buffers.append(decode_tensor(update.buffers, max_bytes=2**24))
        return submit(self, index, update)

    monkeypatch.setattr(RoundBoard, "submit", recording)
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path)
    state_files = [tmp_path / f"state-{c}.safetensors" for c in clients]
    workers = [
        client_thread(config, data, tmp_path, c, k, outcome["port"], state_files[k])
        for k, c in enumerate(clients)
    ]
    server.join(timeout=180)
    for worker in workers:
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    saved = Checkpoints(tmp_path / "simulated")  # the simulation's client buffers too
    simulation = simulate_config(
        config.model_copy(update={"engine": "sequential"}), checkpoint=saved
    )  # fmt: skip
    reference, client_buffers = simulation.final_state, saved.load().client_buffers
    networked = outcome["history"].final_state
    assert torch.allclose(networked.params, reference.params, atol=1e-6, rtol=0)
    assert networked.clients == {}  # the server keeps no client's state
    held = {k: OwnState(f).entries for k, f in enumerate(state_files) if f.exists()}
    assert held.keys() == reference.clients.keys() and held
    for client, entries in reference.clients.items():
        own = dict(held[client])
        if buffers == "local":  # FedBN's running statistics: on the client, as simulated
            kept = own.pop(PERSONAL_BUFFERS)
            assert torch.allclose(kept, client_buffers[client], atol=1e-5, rtol=0)
        assert own.keys() == entries.keys()
        for key, value in entries.items():
            assert torch.allclose(own[key], value, atol=1e-6, rtol=0), (client, key)
    if buffers == "local":  # and never on the wire
        assert all(b.numel() > 0 and not b.any() for b in received_buffers)
    assert len(received) == 3 * 2  # two clients a round, each update accepted at once
    module = initial_module(build_model(config, data.dataset), seed=config.seed)
    if name == "ditto":  # v_k is a whole model: the global pass's update is FedAvg's
        assert all(PERSONAL_MODEL in entries for entries in held.values())
        return
    mask = with_model(build_run(config).algorithm, module).personal.resolved()
    assert 0 < int(mask.sum()) < mask.numel()
    for update in received:  # the personal coordinates never reach the server
        assert not update[mask].any() and update[~mask].any()
    start = flatten_params(module)
    assert torch.equal(networked.params[mask], start[mask])  # the global head: the initial one
    assert all(not torch.equal(e[PERSONAL_VALUES], start[mask]) for e in held.values())


def test_the_board_refuses_an_update_that_carries_a_personal_coordinate():
    """Coordinate 1 of 3 is personal: (0.5, 0, -1) is accepted, (0.5, 0.25, -1) refused with
    its reason, and the refused client may resend a clean one."""
    from fedloom.algorithms.personal_client import PersonalValues
    from fedloom.client import LocalTraining
    from fedloom.net.codec import encode_tensor
    from fedloom.net.proto import fedloom_pb2 as pb
    from fedloom.net.server import Access
    from fedloom.types import ClientPlan

    def update(values):
        return pb.Update(
            round=0, update=encode_tensor(torch.tensor(values)),
            buffers=encode_tensor(torch.zeros(0)), num_examples=3, num_steps=1,
            num_example_passes=3, train_loss=1.0,
        )  # fmt: skip

    personal = (PersonalValues(torch.tensor([0, 1, 0], dtype=torch.uint8)),)
    board = RoundBoard(
        Access(("a", "b")), LocalTraining(), max_tensor_bytes=1 << 16, personal=personal
    )
    assert board.clients_hold_state  # so the round loop leaves start points to the clients
    assert len(board._program.personal) == 1
    board.join(0, 3)
    board.join(1, 3)
    board.open([ClientPlan(0, 0, 1), ClientPlan(1, 0, 2)], torch.zeros(3), torch.zeros(0))
    assert board.submit(0, update([0.5, 0.0, -1.0])) is None
    reason = board.submit(1, update([0.5, 0.25, -1.0]))
    assert "carries values on the personal coordinates" in reason
    assert board.submit(1, update([0.5, 0.0, -1.0])) is None


def test_deployed_local_buffers_start_each_client_from_its_own_statistics(tmp_path):
    """FedAvg with ``model.buffers: local`` (kept by the server, no personal algorithm): each
    client must start a round from its own running statistics of its last round, as in
    simulation. With 4 clients and 3 per round, clients come back, so a server that sent them
    all one client's statistics (as the first deployed version did) ends with other running
    statistics (batch norm trains on batch statistics, so the parameters agree either way)."""
    clients = [f"c{k}" for k in range(4)]
    write_quickstart(tmp_path, clients)
    config = RunConfig.model_validate(
        {
            "seed": 3,
            "rounds": 3,
            "algorithm": {"name": "fedavg"},
            "data": {"dataset": "digits", "num_clients": 4, "partition": "dirichlet"},
            "model": {"name": "digits_cnn_bn", "buffers": "local"},
            "client": {"epochs": 1, "batch_size": 20, "lr": 0.05},
            "server": {"fraction": 0.75},
            "eval": {"clients": False},
        }
    )
    data = build_federated(config)
    server, outcome = serve_in_thread(config, clients, tmp_path, run_dir=tmp_path / "net")
    workers = [
        client_thread(config, data, tmp_path, c, k, outcome["port"]) for k, c in enumerate(clients)
    ]
    server.join(timeout=180)
    for worker in workers:
        worker.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    saved = Checkpoints(tmp_path / "simulated")
    reference = simulate_config(
        config.model_copy(update={"engine": "sequential"}), checkpoint=saved
    )  # fmt: skip
    networked = outcome["history"].final_state
    assert torch.allclose(networked.params, reference.final_state.params, atol=1e-5, rtol=0)
    simulated, deployed = saved.load().client_buffers, Checkpoints(tmp_path / "net").load()
    assert simulated.keys() == deployed.client_buffers.keys() and len(simulated) == 4
    for client, own in simulated.items():
        assert torch.allclose(deployed.client_buffers[client], own, atol=1e-5, rtol=0), client


def test_start_buffers_picks_the_shared_one_and_the_clients_own():
    from fedloom.net.server import start_buffers

    shared, own = torch.zeros(3), torch.tensor([1.0, 2.0, 3.0])
    common, others = start_buffers({0: shared, 1: own, 2: shared})
    assert common is shared and others.keys() == {1} and torch.equal(others[1], own)
    assert start_buffers({})[1] == {}
