import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.aggregate import client_weights, weighted_mean
from fedloom.algorithms import fedavg, server_init, server_update
from fedloom.types import ClientResult


def result(client_id, update, num_examples, buffers=()):
    return ClientResult(
        client_id=client_id,
        update=torch.tensor(update, dtype=torch.float32),
        buffers=torch.tensor(buffers, dtype=torch.float32),
        num_examples=num_examples,
        num_steps=1,
        num_example_passes=num_examples,
        train_loss=0.0,
    )


def test_weighted_mean_by_examples_hand_computed():
    # n = 1 + 3 = 4: 1/4 * [4, 0] + 3/4 * [0, 8] = [1, 6]
    results = [result(0, [4.0, 0.0], 1), result(1, [0.0, 8.0], 3)]
    weights = client_weights(results, "examples")
    assert weights.tolist() == [0.25, 0.75]
    assert weighted_mean(torch.stack([r.update for r in results]), weights).tolist() == [1.0, 6.0]


def test_uniform_and_custom_weighting():
    results = [result(0, [4.0], 1), result(1, [0.0], 3)]
    assert client_weights(results, "uniform").tolist() == [0.5, 0.5]
    custom = client_weights(results, lambda c: c.client_id + 1)
    assert torch.allclose(custom, torch.tensor([1 / 3, 2 / 3]))
    with pytest.raises(ValueError, match="unknown weighting"):
        client_weights(results, "by-mood")
    with pytest.raises(ValueError, match="finite non-negative"):
        client_weights(results, lambda c: 1.0 if c.client_id == 0 else -1.0)


def test_server_update_applies_server_lr_and_averages_buffers():
    # w_t = [1, 1]; Delta = 0.25*[4, 0] + 0.75*[0, 8] = [1, 6]; server_lr 0.5 -> [1.5, 4]
    algorithm = fedavg(server_lr=0.5)
    state = server_init(algorithm, torch.tensor([1.0, 1.0]), torch.tensor([0.0]))
    results = [result(0, [4.0, 0.0], 1, [2.0]), result(1, [0.0, 8.0], 3, [6.0])]
    new = server_update(algorithm, state, results)
    assert new.params.tolist() == [1.5, 4.0]
    assert new.buffers.tolist() == [5.0]  # 0.25*2 + 0.75*6
    assert new.round == 1
    assert state.params.tolist() == [1.0, 1.0]  # the old state is untouched
    kept = server_update(algorithm, state, results, average_buffers=False)
    assert kept.buffers.tolist() == [0.0]


@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=12),
    st.integers(1, 30),
    st.integers(0, 2**16),
)
@settings(max_examples=50, deadline=None)
def test_weighted_mean_matches_numpy_and_is_permutation_invariant(sizes, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(len(sizes), dim, generator=generator)
    results = [result(k, updates[k].tolist(), n) for k, n in enumerate(sizes)]
    mean = weighted_mean(updates, client_weights(results, "examples"))
    n = updates.double().numpy()
    w = torch.tensor(sizes, dtype=torch.float64).numpy()
    reference = (w[:, None] * n).sum(0) / w.sum()
    assert torch.allclose(mean.double(), torch.from_numpy(reference), atol=1e-5)
    perm = torch.randperm(len(sizes), generator=generator)
    permuted = [results[i] for i in perm]
    mean_perm = weighted_mean(updates[perm], client_weights(permuted, "examples"))
    assert torch.allclose(mean, mean_perm, atol=1e-6)


def test_weighted_mean_checks_shapes():
    with pytest.raises(ValueError, match="expected updates"):
        weighted_mean(torch.zeros(3, 2), torch.ones(2))
