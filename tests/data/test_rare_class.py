"""The rare-class partition: prevalence, unevenness, what it leaves out, config and errors."""

import numpy as np
import pytest
import torch

from fedloom.config import load_config
from fedloom.config.data import build_federated_data
from fedloom.data import Dataset, RareClass, federate, partition
from fedloom.errors import ConfigError, DataError


def _labels(n=20_000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, size=n)


def _counts(parts, labels, rare):
    return np.array([int(np.sum(labels[p] == rare)) for p in parts])


@pytest.mark.parametrize("prevalence", [0.01, 0.02, 0.05])
def test_the_rare_class_has_the_asked_prevalence_and_the_rest_is_kept_whole(prevalence):
    labels = _labels()
    parts = partition.rare_class(labels, 30, rare_class=3, prevalence=prevalence, alpha=0.5,
                                 rng=np.random.default_rng(1))  # fmt: skip
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)  # no example twice
    kept = labels[everything]
    assert np.mean(kept == 3) == pytest.approx(prevalence, abs=1 / len(kept))
    assert np.sum(kept != 3) == np.sum(labels != 3)  # every other example is used
    other_sizes = [int(np.sum(labels[p] != 3)) for p in parts]
    assert max(other_sizes) - min(other_sizes) <= 1  # the rest is IID, equal sizes


def test_small_alpha_concentrates_the_rare_class_and_large_alpha_spreads_it():
    labels = _labels()
    rng = np.random.default_rng(2)
    skewed = _counts(partition.rare_class(labels, 40, rare_class=0, prevalence=0.02, alpha=0.1,
                                          rng=rng), labels, 0)  # fmt: skip
    even = _counts(partition.rare_class(labels, 40, rare_class=0, prevalence=0.02, alpha=100.0,
                                        rng=rng), labels, 0)  # fmt: skip
    assert skewed.sum() == even.sum()
    cv_skewed, cv_even = skewed.std() / skewed.mean(), even.std() / even.mean()
    assert cv_skewed > 1.5 and cv_even < 0.3  # coefficient of variation over clients
    assert np.sum(skewed == 0) >= 10  # many clients never see the rare class
    top = np.sort(skewed)[::-1]
    assert top[:4].sum() > 0.5 * skewed.sum()  # a tenth of the clients hold most of it
    assert np.all(even > 0)


def test_the_rest_can_have_dirichlet_label_skew():
    labels = _labels()
    parts = partition.rare_class(labels, 20, rare_class=5, prevalence=0.02, alpha=1.0,
                                 rest_alpha=0.1, rng=np.random.default_rng(3))  # fmt: skip
    histograms = np.stack([np.bincount(labels[p], minlength=10) for p in parts])
    others = np.delete(histograms, 5, axis=1)
    assert np.mean(others.max(1) / others.sum(1)) > 0.5  # mostly one or two labels each


def test_federate_accepts_the_partition_and_is_reproducible():
    y = torch.tensor(_labels(5000))
    dataset = Dataset("toy", torch.zeros(5000, 2), y, torch.zeros(3, 2), y[:3], num_classes=10)
    partitioner = RareClass(10, rare_class=7, prevalence=0.03, alpha=0.3)
    first = federate(dataset, partitioner, holdout_fraction=0.1, seed=4)
    again = federate(dataset, partitioner, holdout_fraction=0.1, seed=4)
    assert all(
        np.array_equal(a, b) for a, b in zip(first.client_train, again.client_train, strict=True)
    )
    held = sum(len(h) for h in first.client_holdout)
    rare = first.label_histograms()[:, 7].sum() + sum(
        int(np.sum(y.numpy()[h] == 7)) for h in first.client_holdout
    )
    assert rare / (first.client_sizes.sum() + held) == pytest.approx(0.03, abs=1e-3)


def test_an_impossible_prevalence_is_a_data_error_with_the_range():
    labels = _labels(1000)
    with pytest.raises(DataError, match=r"prevalence 0.5 of class 2 needs .* choose a prevalence"):
        partition.rare_class(labels, 5, rare_class=2, prevalence=0.5, alpha=1.0,
                             rng=np.random.default_rng(0))  # fmt: skip
    with pytest.raises(DataError, match="rare_class 11 has no examples"):
        partition.rare_class(labels, 5, rare_class=11, prevalence=0.02, alpha=1.0,
                             rng=np.random.default_rng(0))  # fmt: skip


def test_exhaustive_partitions_still_reject_left_out_examples():
    with pytest.raises(DataError, match="1 examples unassigned"):
        partition.check_partition([np.array([0, 1]), np.array([2])], 4)
    partition.check_partition([np.array([0, 1]), np.array([2])], 4, exhaustive=False)
    with pytest.raises(DataError, match="1 assigned twice"):
        partition.check_partition([np.array([0, 1]), np.array([1])], 4, exhaustive=False)


def test_configured_from_yaml_with_bounds(tmp_path):
    path = tmp_path / "rare.yaml"
    path.write_text(
        "data:\n  num_clients: 10\n  partition:\n    kind: rare_class\n    rare_class: 8\n"
        "    prevalence: 0.02\n    alpha: 0.2\n"
    )
    config = load_config(path)
    data = build_federated_data(config.data, seed=0)
    hist = data.label_histograms()
    assert hist[:, 8].sum() / hist.sum() == pytest.approx(0.02, abs=0.01)  # digits: small
    for bad, field in [
        ("data.partition.prevalence=0", "data.partition.prevalence"),
        ("data.partition.prevalence=0.6", "data.partition.prevalence"),
        ("data.partition.alpha=-1", "data.partition.alpha"),
        ("data.partition.rare_class=-1", "data.partition.rare_class"),
    ]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(path, [bad])
    unreachable = load_config(path, ["data.partition.prevalence=0.5"])
    with pytest.raises(ConfigError, match="data.partition: prevalence 0.5 of class 8"):
        build_federated_data(unreachable.data, seed=0)


def test_data_describe_says_how_many_examples_the_partition_left_out(capsys, monkeypatch):
    from fedloom.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    sets = ["data.partition=rare_class", "data.num_clients=4", "data.partition.rare_class=2"]
    assert main(["data", "describe", *[a for s in sets for a in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "training examples left out by the partition" in out
