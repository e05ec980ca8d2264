"""The client-state store spilled to disk gives the in-memory store's run bit for bit, keeps
only a few clients in memory, and resumes from a checkpoint."""

import pytest
import torch

import fedloom as fl
from fedloom.algorithms.scaffold import CLIENT_CONTROL
from fedloom.client import LocalTraining
from fedloom.client.spill import SpilledClientStates
from fedloom.client.store import with_writes
from fedloom.data import Dirichlet, federate
from fedloom.engine import Checkpoints
from fedloom.errors import FedloomError

LOCAL = LocalTraining(epochs=1, batch_size=20, lr=0.05)


def _scaffold(data, rounds, **kwargs):
    return fl.simulate(
        fl.scaffold(), data, fl.models.digits_mlp, rounds=rounds, fraction=0.4, local=LOCAL,
        seed=3, engine="sequential", eval_clients=False, **kwargs,
    )  # fmt: skip


def _assert_same_store(spilled, memory):
    assert sorted(spilled) == sorted(memory)
    for client, entries in memory.items():
        assert torch.equal(spilled[client][CLIENT_CONTROL], entries[CLIENT_CONTROL])


def test_scaffold_on_a_spilled_store_equals_the_in_memory_run(digits, tmp_path):
    data = federate(digits, Dirichlet(10, 0.5), seed=0)
    memory = _scaffold(data, 4).final_state
    store = SpilledClientStates(tmp_path / "state", cache_clients=2)
    spilled = _scaffold(data, 4, client_states=store).final_state
    assert isinstance(spilled.clients, SpilledClientStates)
    assert torch.equal(spilled.params, memory.params)
    assert torch.equal(spilled.algorithm, memory.algorithm)  # c
    _assert_same_store(spilled.clients, memory.clients)  # every c_k, read back from disk
    assert spilled.clients.resident <= 2
    files = list((tmp_path / "state").glob("*.safetensors"))
    # one file per client with state, plus those the last round replaced (deleted next round)
    assert len(spilled.clients) <= len(files) <= len(spilled.clients) + 4


def test_a_spilled_run_resumes_from_its_checkpoint(digits, tmp_path):
    data = federate(digits, Dirichlet(10, 0.5), seed=0)
    uninterrupted = _scaffold(data, 4).final_state

    def run(rounds):
        store = SpilledClientStates(tmp_path / "state", cache_clients=3)
        checkpoint = Checkpoints(tmp_path / "run", fingerprint="spill")
        return _scaffold(data, rounds, client_states=store, checkpoint=checkpoint).final_state

    run(2)
    orphan = tmp_path / "state" / "99-written-after-the-checkpoint.safetensors"
    orphan.write_bytes(b"")
    resumed = run(4)  # rounds 3 and 4 only, from the checkpoint's store
    assert not orphan.exists()
    assert torch.equal(resumed.params, uninterrupted.params)
    _assert_same_store(resumed.clients, uninterrupted.clients)


def test_old_versions_stay_readable_until_the_next_write(tmp_path):
    v0 = SpilledClientStates(tmp_path, cache_clients=1)
    v1 = with_writes(v0, {1: {"a": torch.ones(2)}, 2: {"a": torch.zeros(2)}})
    v2 = with_writes(v1, {1: {"b": torch.full((1,), 5.0)}})
    assert len(v0) == 0 and v1[1].keys() == {"a"}
    assert sorted(v2[1]) == ["a", "b"] and v2[2]["a"].tolist() == [0.0, 0.0]
    v3 = with_writes(v2, {2: {"a": torch.ones(2)}})  # deletes the file v2 replaced
    with pytest.raises(FedloomError, match="cannot read the client state file"):
        v1[1]  # noqa: B018 - two versions back: gone
    assert v3[1]["b"].tolist() == [5.0] and v3[2]["a"].tolist() == [1.0, 1.0]
    reference = v3.reference()
    (tmp_path / reference["index"]["2"]).unlink()
    with pytest.raises(FedloomError, match="client state in .* is incomplete"):
        SpilledClientStates.restore(reference)
