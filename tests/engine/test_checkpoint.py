"""Checkpoints: a run stopped after round 2 and resumed ends exactly where an uninterrupted
run ends, for algorithms whose server state is more than the model."""

import json
import math
from dataclasses import dataclass

import pytest
import torch

import fedloom as fl
from fedloom.aggregate import CenteredClipping, Clip, PerClient
from fedloom.client import LocalTraining
from fedloom.data import federate, partition
from fedloom.engine import Callback, Checkpoints, run_rounds
from fedloom.engine.checkpoint import _pack, _unpack
from fedloom.errors import FedloomError
from fedloom.params import flatten_buffers, flatten_params
from fedloom.report import MetricsFiles
from fedloom.sim import SequentialExecutor


def test_state_structures_round_trip_through_tensors_and_json():
    state = {
        "adam": (torch.arange(3.0), torch.full((2, 2), 0.5)),
        "controls": {7: torch.ones(2), 12: torch.zeros(0)},
        "nothing": None,
        "numbers": [1, 2.5, True, "x", float("inf")],
    }
    tensors: dict[str, torch.Tensor] = {}
    packed = json.loads(json.dumps(_pack(state, tensors)))
    restored = _unpack(packed, tensors)
    assert isinstance(restored["adam"], tuple) and torch.equal(
        restored["adam"][1], state["adam"][1]
    )
    assert set(restored["controls"]) == {7, 12} and restored["controls"][12].numel() == 0
    assert restored["nothing"] is None and restored["numbers"] == state["numbers"]
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        _pack(object(), {})


@dataclass(frozen=True)
class AdaptiveClip(PerClient):
    """A per-client stage with state: the clip norm moves towards the ``target`` quantile of
    the update norms (Andrew et al. 2021, without the noise), from the clipped fraction."""

    initial: float = 0.05
    target: float = 0.5
    lr: float = 0.5

    def init(self, params):
        return self.initial

    def update(self, contribution, state, *, info):
        return Clip(state).update(contribution, (), info=info)

    def end_round(self, state, cohort, *, info):
        unclipped = 1.0 - cohort.tallies["clip/clipped"] / cohort.num_results
        return state * math.exp(-self.lr * (unclipped - self.target))


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


class StopAfter(Callback):
    def __init__(self, rounds):
        self.rounds = rounds

    def on_round(self, report, state):
        if report.round == self.rounds:
            raise KeyboardInterrupt  # the process dies here, after the checkpoint was written


def _run(algorithm, data, module, rounds, **kwargs):
    executor = SequentialExecutor(module, data, LocalTraining(epochs=1, batch_size=20, lr=0.05))
    return run_rounds(
        algorithm,
        executor,
        num_clients=data.num_clients,
        params=flatten_params(module),
        buffers=flatten_buffers(module),
        rounds=rounds,
        fraction=0.5,
        seed=3,
        settings=LocalTraining(epochs=1, batch_size=20, lr=0.05),
        **kwargs,
    )


@pytest.mark.parametrize(
    "algorithm",
    [
        fl.scaffold(),
        fl.fedadam(server_lr=0.01),
        fl.fedavgm(server_lr=1.0, momentum=0.9).with_aggregator(CenteredClipping(tau=1.0)),
        fl.fedadam(server_lr=0.01).with_aggregation(per_client=(AdaptiveClip(),)),
    ],
    ids=["scaffold", "fedadam", "fedavgm-centered-clipping", "fedadam-adaptive-clip"],
)
def test_a_run_interrupted_after_round_2_and_resumed_equals_an_uninterrupted_run(
    digits, tmp_path, algorithm
):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 8, rng=rng), seed=1)
    module = fl.models.digits_mlp()
    uninterrupted = _run(algorithm, data, module, 5)

    checkpoints = Checkpoints(tmp_path / "ckpt", fingerprint="run-a")
    with pytest.raises(KeyboardInterrupt):
        _run(algorithm, data, module, 5, checkpoint=checkpoints, callbacks=[StopAfter(2)])
    assert checkpoints.load().state.round == 2
    metrics = MetricsFiles(tmp_path)
    resumed = _run(algorithm, data, module, 5, checkpoint=checkpoints, callbacks=[metrics])

    final, expected = resumed.final_state, uninterrupted.final_state
    assert torch.equal(final.params, expected.params)  # bit for bit
    assert final.round == expected.round == 5
    assert [r.round for r in resumed.reports] == [1, 2, 3, 4, 5]
    assert [r.metrics["train_loss"] for r in resumed.reports] == [
        r.metrics["train_loss"] for r in uninterrupted.reports
    ]
    # the metrics file holds every round, the two before the interruption included
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4, 5]
    # the strategy state came back too, not just the model: every stage's state
    assert _same(final.aggregation, expected.aggregation)
    if algorithm.aggregation.per_client:
        clip_norm = final.aggregation["per_client"][0]
        assert isinstance(clip_norm, float) and clip_norm != AdaptiveClip.initial
    if final.algorithm is not None:  # SCAFFOLD's c and every client's c_k
        assert torch.equal(final.algorithm, expected.algorithm)
        assert final.clients.keys() == expected.clients.keys()


def test_a_finished_run_resumes_to_its_end_without_training(digits, tmp_path):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 4, rng=rng), seed=1)
    module = fl.models.digits_mlp()
    checkpoints = Checkpoints(tmp_path, fingerprint="x")
    first = _run(fl.fedavg(), data, module, 2, checkpoint=checkpoints)
    again = _run(fl.fedavg(), data, module, 2, checkpoint=checkpoints)
    assert torch.equal(first.final_state.params, again.final_state.params)
    assert again.reports == first.reports


def test_a_checkpoint_of_another_run_or_a_torn_file_is_refused_clearly(digits, tmp_path):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 4, rng=rng), seed=1)
    module = fl.models.digits_mlp()
    _run(fl.fedavg(), data, module, 1, checkpoint=Checkpoints(tmp_path, fingerprint="a"))
    with pytest.raises(FedloomError, match="belongs to a different run"):
        Checkpoints(tmp_path, fingerprint="b").load()
    # a half-written temporary file from a killed writer is ignored: the rename never happened
    (tmp_path / "checkpoint.safetensors.tmp").write_bytes(b"\x00" * 10)
    assert Checkpoints(tmp_path, fingerprint="a").load().state.round == 1
    # a damaged checkpoint is an error naming the file, never a silent fresh start
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FedloomError, match="cannot read the checkpoint"):
        Checkpoints(tmp_path, fingerprint="a").load()
