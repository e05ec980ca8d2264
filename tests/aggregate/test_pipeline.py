"""The aggregation pipeline: streaming equals stacking, composition, plugin errors, state."""

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedloom as fl
from fedloom.aggregate import (
    CenteredClipping,
    Contribution,
    CoordinateMedian,
    Krum,
    Mean,
    PerClient,
    RoundInfo,
    Sum,
    Transform,
    aggregate_stack,
    begin,
    chain,
    clip,
    finish,
    fold,
    fold_contribution,
    pipeline,
    scale,
    server_momentum,
)
from fedloom.algorithms import server_init, server_update
from fedloom.errors import StageError
from fedloom.types import ClientResult


def result(client_id, update, num_examples=1, buffers=()):
    return ClientResult(
        client_id=client_id,
        update=torch.as_tensor(update, dtype=torch.float32),
        buffers=torch.tensor(buffers, dtype=torch.float32),
        num_examples=num_examples,
        num_steps=1,
        num_example_passes=num_examples,
        train_loss=0.0,
    )


def _stream(p, results, *, expected=None, params=None, state=None, info=None):
    params = torch.zeros(results[0].update.numel()) if params is None else params
    state = p.init(params) if state is None else state
    run = begin(p, state, params, info=info or RoundInfo(), expected=expected)
    for r in results:
        run = fold(run, r)
    return finish(run)


# --- the streaming mean ---------------------------------------------------------------------


@given(
    st.lists(st.integers(1, 5000), min_size=1, max_size=15),
    st.integers(1, 40),
    st.integers(0, 2**16),
    st.randoms(use_true_random=False),
)
@settings(max_examples=60, deadline=None)
def test_streaming_mean_equals_the_stacked_mean_in_any_arrival_order(sizes, dim, seed, random):
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(len(sizes), dim, generator=generator) * 10
    results = [result(k, updates[k], n) for k, n in enumerate(sizes)]
    # float64 reference: sum_k n_k u_k / sum_k n_k
    w = np.array(sizes, dtype=np.float64)
    reference = (w[:, None] * updates.double().numpy()).sum(0) / w.sum()
    streamed = _stream(pipeline(), results).step
    assert streamed.dtype == torch.float32
    np.testing.assert_allclose(streamed.double().numpy(), reference, rtol=1e-6, atol=1e-6)
    # the old stacked path (one float32 matmul) agrees to float32 rounding
    stacked = Mean().combine(updates, fl.aggregate.client_weights(results, "examples"))
    assert torch.allclose(streamed, stacked, rtol=1e-5, atol=1e-5)
    # arrival order: the float64 sums agree far below float32 rounding
    order = list(range(len(results)))
    random.shuffle(order)
    permuted = _stream(pipeline(), [results[i] for i in order]).step
    np.testing.assert_allclose(permuted.numpy(), streamed.numpy(), rtol=1e-7, atol=1e-7)


def test_streaming_mean_holds_running_sums_not_a_stack():
    p = pipeline()
    run = begin(p, p.init(torch.zeros(3)), torch.zeros(3), info=RoundInfo())
    run = fold(run, result(0, [1.0, 2.0, 3.0], 1))
    run = fold(run, result(1, [3.0, 2.0, 1.0], 3))
    total, _, weight, count = run.acc
    assert total.shape == (3,) and total.dtype == torch.float64  # O(P), never [K, P]
    assert (weight, count) == (4.0, 2)
    assert finish(run).step.tolist() == [2.5, 2.0, 1.5]


def test_sum_reducer_and_tallies_reach_the_aggregate_stages():
    seen = {}

    def record(x, state, *, cohort, params, info):
        seen.update(num=cohort.num_results, weight=cohort.total_weight, tallies=cohort.tallies)
        return x, state

    p = pipeline(
        weighting="uniform",
        per_client=clip(1.0),
        reduce=Sum(),
        server=Transform(lambda _: (), record),
    )
    out = _stream(p, [result(0, [3.0, 4.0]), result(1, [0.3, 0.4]), result(2, [0.0, 2.0])])
    # clipped to (0.6, 0.8) and (0, 1); summed with (0.3, 0.4)
    assert torch.allclose(out.step, torch.tensor([0.9, 2.2]))
    assert seen == {"num": 3, "weight": 3.0, "tallies": {"clip/clipped": 2.0}}
    assert out.cohort.tallies == {"clip/clipped": 2.0}


def test_stacked_reducers_give_the_same_result_however_the_matrix_grows():
    torch.manual_seed(0)
    updates = torch.randn(11, 6)
    results = [result(k, updates[k], k + 1) for k in range(11)]
    for rule in (CoordinateMedian(), Krum(f=2, m=3)):
        p = pipeline(reduce=rule)
        direct = rule(updates, fl.aggregate.client_weights(results, "examples"))
        for expected in (None, 1, 11, 40):
            assert torch.equal(_stream(p, results, expected=expected).step, direct), expected


def test_buffers_are_averaged_with_the_weighting_weights():
    p = pipeline()
    params = torch.zeros(1)
    run = begin(p, p.init(params), params, info=RoundInfo(), num_buffers=1)
    run = fold(run, result(0, [0.0], 1, buffers=[2.0]))
    run = fold(run, result(1, [0.0], 3, buffers=[6.0]))
    assert finish(run).buffers.tolist() == [5.0]


# --- composition ----------------------------------------------------------------------------


def test_chain_composes_aggregate_stages_in_order_with_a_tuple_of_states():
    chained = chain(scale(2.0), server_momentum(1.0, 0.5))
    assert chained.name == "chain(scale, server_momentum)"
    params = torch.zeros(2)
    state = chained.init(params)
    assert state[0] == () and torch.equal(state[1], torch.zeros(2))
    context = {"cohort": None, "params": params, "info": RoundInfo()}
    x, state = chained.update(torch.tensor([1.0, -1.0]), state, **context)
    assert x.tolist() == [2.0, -2.0]
    x, state = chained.update(torch.tensor([1.0, 0.0]), state, **context)
    assert x.tolist() == [0.5 * 2 + 2.0, 0.5 * -2 + 0.0]  # v = 0.5 v + 2 u
    # the same as the two stages in the pipeline's aggregate section
    results = [result(0, [1.0, -1.0])]
    for p in (pipeline(server=chained), pipeline(server=(scale(2.0), server_momentum(1.0, 0.5)))):
        assert _stream(p, results).step.tolist() == [2.0, -2.0]


def test_chain_composes_per_client_stages_and_refuses_mixed_kinds():
    halve = _Scale(0.5)
    stage = chain(clip(1.0), halve)
    out = _stream(pipeline(weighting="uniform", per_client=stage), [result(0, [3.0, 4.0])])
    assert torch.allclose(out.step, torch.tensor([0.3, 0.4]))
    assert stage.statistics == frozenset()
    with pytest.raises(StageError, match="composes stages of one kind"):
        chain(clip(1.0), scale(2.0))


@dataclass(frozen=True)
class _Scale(PerClient):
    factor: float

    def update(self, contribution, state, *, info):
        return replace(contribution, update=contribution.update * self.factor)


def test_per_client_randomness_is_derived_from_seed_round_and_client():
    @dataclass(frozen=True)
    class LocalNoise(PerClient):
        def update(self, contribution, state, *, info):
            noise = torch.randn(
                contribution.update.shape,
                generator=info.generator("noise", contribution.client_id),
            )
            return replace(contribution, update=contribution.update + noise)

    p = pipeline(weighting="uniform", per_client=LocalNoise(), reduce=Sum())
    results = [result(k, torch.zeros(4)) for k in range(5)]
    info = RoundInfo(seed=3, round=2)
    a = _stream(p, results, info=info).step
    b = _stream(p, results[::-1], info=info).step
    assert torch.allclose(a, b, atol=1e-6)  # each client draws its own noise, in any order
    assert not torch.allclose(a, _stream(p, results, info=RoundInfo(seed=3, round=3)).step)


# --- a plugin's mistakes are errors that name it, before the state changes -------------------


@dataclass(frozen=True)
class _Broken(PerClient):
    returns: str

    @property
    def name(self):
        return "broken_quantizer"

    def update(self, contribution, state, *, info):
        if self.returns == "shape":
            return replace(contribution, update=contribution.update.reshape(2, -1))
        if self.returns == "list":
            return replace(contribution, update=contribution.update.tolist())
        if self.returns == "dtype":
            return replace(contribution, update=contribution.update.double())
        if self.returns == "weight":
            return replace(contribution, weight=float("nan"))
        return contribution.update  # not a Contribution at all


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ("shape", r"'broken_quantizer' returned update of shape \(2, 3\); expected \(6,\)"),
        ("list", r"'broken_quantizer' returned update of type list; expected a torch.float32 "),
        ("dtype", r"'broken_quantizer' returned update of dtype torch.float64; expected"),
        ("weight", r"'broken_quantizer' gave client 0 the weight nan"),
        ("tensor", r"'broken_quantizer' returned a Tensor; expected a Contribution"),
    ],
)
def test_a_faulty_per_client_stage_is_named_and_the_server_state_is_unchanged(returns, message):
    algorithm = fl.fedadam(server_lr=0.1).with_aggregation(per_client=(_Broken(returns),))
    state = server_init(algorithm, torch.ones(6), torch.zeros(0))
    before = (state.params.clone(), [t.clone() for t in state.aggregation["server"][0]])
    results = [result(0, torch.arange(6.0)), result(1, torch.ones(6))]
    with pytest.raises(StageError, match=message):
        server_update(algorithm, state, results)
    assert torch.equal(state.params, before[0]) and state.round == 0
    assert all(
        torch.equal(a, b) for a, b in zip(state.aggregation["server"][0], before[1], strict=True)
    )


def test_a_faulty_reducer_or_aggregate_stage_is_named():
    bad_server = Transform(lambda _: (), lambda x, s, **_: (x[:-1], s), name="truncate")
    with pytest.raises(StageError, match=r"'truncate' returned update of shape \(2,\); expected"):
        _stream(pipeline(server=bad_server), [result(0, [1.0, 2.0, 3.0])])
    not_a_tensor = Transform(lambda _: (), lambda x, s, **_: (x.numpy(), s), name="to_numpy")
    with pytest.raises(StageError, match="'to_numpy' returned update of type ndarray"):
        _stream(pipeline(server=not_a_tensor), [result(0, [1.0, 2.0, 3.0])])
    params = torch.zeros(3)
    run = begin(pipeline(), pipeline().init(params), params, info=RoundInfo())
    with pytest.raises(StageError, match=r"'input' returned update of shape \(2,\)"):
        fold_contribution(run, Contribution(torch.zeros(2), 1.0, 0, 1, 1))


def test_a_failing_stage_in_the_loop_leaves_the_checkpoint_of_the_last_good_round(digits, tmp_path):
    from fedloom.client import LocalTraining
    from fedloom.data import IID, federate
    from fedloom.engine import Checkpoints, run_rounds
    from fedloom.params import flatten_buffers, flatten_params
    from fedloom.sim import SequentialExecutor

    @dataclass(frozen=True)
    class FailsInRound2(PerClient):
        def update(self, contribution, state, *, info):
            if info.round == 2:
                return replace(contribution, update=contribution.update[:10])
            return contribution

    data = federate(digits, IID(4), seed=0)
    module = fl.models.digits_mlp()
    local = LocalTraining(epochs=1, batch_size=20, lr=0.05)
    checkpoints = Checkpoints(tmp_path, fingerprint="x")
    algorithm = fl.fedavgm().with_aggregation(per_client=(FailsInRound2(),))
    with pytest.raises(StageError, match="'FailsInRound2' returned update of shape \\(10,\\)"):
        run_rounds(
            algorithm,
            SequentialExecutor(module, data, local),
            num_clients=4,
            params=flatten_params(module),
            buffers=flatten_buffers(module),
            rounds=4,
            fraction=0.5,
            settings=local,
            checkpoint=checkpoints,
        )
    assert checkpoints.load().state.round == 2  # rounds 0 and 1 done; round 2 never applied


def test_aggregate_stack_runs_a_pipeline_once_over_a_matrix():
    updates = torch.tensor([[3.0, 4.0], [0.0, 0.5], [0.0, 0.1]])
    weights = torch.tensor([0.5, 0.25, 0.25])
    step, state = aggregate_stack(
        pipeline(per_client=clip(1.0), reduce=CenteredClipping(tau=10.0)), updates, weights
    )
    expected = 0.5 * torch.tensor([0.6, 0.8]) + 0.25 * updates[1] + 0.25 * updates[2]
    assert torch.allclose(step, expected) and torch.equal(state["reduce"], step)
