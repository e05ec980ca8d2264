import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.data import partition
from fedloom.errors import DataError


def labels_for(num_examples: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, num_examples)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@given(st.integers(1, 400), st.integers(1, 40), st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_iid_covers_every_example_once_and_balances(num_examples, num_clients, seed):
    if num_examples < num_clients:
        with pytest.raises(DataError):
            partition.iid(num_examples, num_clients, rng=rng(seed))
        return
    parts = partition.iid(num_examples, num_clients, rng=rng(seed))
    partition.check_partition(parts, num_examples)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@given(st.integers(5, 40), st.integers(1, 4), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_shards_give_at_most_s_labels_per_client(num_clients, shards_per_client, seed):
    labels = labels_for(2000, seed=seed)
    if num_clients * shards_per_client < 10:
        return
    parts = partition.shards(
        labels, num_clients, shards_per_client=shards_per_client, rng=rng(seed)
    )
    partition.check_partition(parts, len(labels))
    assert max(len(np.unique(labels[p])) for p in parts) <= shards_per_client


def test_shards_mcmahan_setting_sizes():
    # 60,000 examples, 100 clients x 2 shards: shards of ~300, clients of ~600
    labels = np.repeat(np.arange(10), 6000)
    parts = partition.shards(labels, 100, shards_per_client=2, rng=rng())
    assert all(len(p) == 600 for p in parts)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2


def test_shards_refuse_fewer_shards_than_labels():
    with pytest.raises(DataError, match="num_clients \\* shards_per_client >= the 10 labels"):
        partition.shards(labels_for(500), 2, shards_per_client=2, rng=rng())


def _mean_max_label_share(labels, parts):
    return np.mean([np.bincount(labels[p]).max() / len(p) for p in parts])


def test_dirichlet_extremes():
    labels = np.repeat(np.arange(10), 1000)
    near_iid = partition.dirichlet(labels, 20, alpha=1e6, rng=rng())
    skewed = partition.dirichlet(labels, 20, alpha=0.01, rng=rng())
    for parts in (near_iid, skewed):
        partition.check_partition(parts, len(labels))
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    # near IID: every client holds every label at close to 10%
    hist = np.stack([np.bincount(labels[p], minlength=10) / len(p) for p in near_iid])
    assert np.abs(hist - 0.1).max() < 0.03
    # highly skewed: a client's majority label is almost all of its data
    assert _mean_max_label_share(labels, near_iid) < 0.13
    # (equal client sizes force the last clients to take leftovers, so not every client is pure)
    assert _mean_max_label_share(labels, skewed) > 0.8
    assert np.median([len(np.unique(labels[p])) for p in skewed]) <= 2


def test_dirichlet_skew_decreases_with_alpha():
    labels = np.repeat(np.arange(10), 500)
    shares = [
        _mean_max_label_share(labels, partition.dirichlet(labels, 25, alpha=a, rng=rng(1)))
        for a in (0.05, 0.5, 5.0, 500.0)
    ]
    assert shares == sorted(shares, reverse=True)


@given(st.integers(1, 60), st.floats(0.0, 3.0), st.integers(1, 20), st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_quantity_skew_sizes_and_minimum(num_clients, sigma, min_size, seed):
    num_examples = 2000
    if num_clients * min_size > num_examples:
        with pytest.raises(DataError, match="needs"):
            partition.quantity_skew(
                num_examples, num_clients, sigma=sigma, min_size=min_size, rng=rng(seed)
            )
        return
    parts = partition.quantity_skew(
        num_examples, num_clients, sigma=sigma, min_size=min_size, rng=rng(seed)
    )
    partition.check_partition(parts, num_examples)
    assert min(len(p) for p in parts) >= min_size


def test_quantity_skew_is_unequal_with_large_sigma():
    parts = partition.quantity_skew(60_000, 1000, sigma=1.0, min_size=10, rng=rng())
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 10 and sizes.sum() == 60_000
    assert sizes.max() > 8 * np.median(sizes)


def test_natural_groups_by_owner():
    owners = np.array([3, 1, 3, 2, 1, 3])
    parts = partition.natural(owners)
    assert [p.tolist() for p in parts] == [[1, 4], [3], [0, 2, 5]]


def test_check_partition_reports_holes_and_repeats():
    with pytest.raises(DataError, match="1 examples unassigned, 1 assigned twice"):
        partition.check_partition([np.array([0, 1]), np.array([1])], 3)


def test_same_seed_same_partition():
    labels = labels_for(1000)
    a = partition.dirichlet(labels, 10, alpha=0.3, rng=rng(7))
    b = partition.dirichlet(labels, 10, alpha=0.3, rng=rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
