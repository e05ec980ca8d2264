"""Task sequences: which labels each task holds, when it starts, each client's view of it."""

import numpy as np
import pytest

from fedloom.data import IID, FederatedDataset, TaskSequence, federate, load_digits, task_data
from fedloom.data.task_sequence import check_task_sequence, label_groups, task_test_batch
from fedloom.errors import ConfigError


def test_label_groups_and_the_task_of_each_round():
    pairs = label_groups(10)
    assert pairs == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    every = TaskSequence(pairs, rounds_per_task=2)
    assert [every.task_at(r) for r in range(12)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    assert every.num_rounds == 10
    scheduled = TaskSequence(pairs[:3], starts=(0, 1, 5))
    assert [scheduled.task_at(r) for r in range(7)] == [0, 1, 1, 1, 1, 2, 2]
    assert scheduled.num_rounds is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rounds_per_task": 0}, "data.task_sequence.rounds_per_task"),
        ({"starts": (1, 3)}, "data.task_sequence.starts"),
        ({"starts": (0, 0)}, "data.task_sequence.starts"),
        ({}, "data.task_sequence: give exactly one"),
        ({"rounds_per_task": 1, "starts": (0, 1)}, "data.task_sequence: give exactly one"),
    ],
)
def test_bad_schedules_are_config_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        TaskSequence(((0, 1), (2, 3)), **kwargs)


def test_each_client_sees_only_the_current_tasks_labels_of_its_own_share():
    data = federate(load_digits(), IID(4), holdout_fraction=0.2, seed=0)
    sequence = TaskSequence(label_groups(10), rounds_per_task=1)
    labels = data.dataset.train_y.numpy()
    for t, wanted in enumerate(sequence.tasks):
        view = task_data(data, sequence, t)
        for k in range(4):
            for mine, share in ((view.client_train[k], data.client_train[k]),
                                (view.client_holdout[k], data.client_holdout[k])):  # fmt: skip
                assert set(labels[mine]) == set(wanted)
                assert np.array_equal(mine, share[np.isin(labels[share], wanted)])
    # over the tasks, each client's rows are its whole share, each row once
    for k in range(4):
        rows = np.concatenate([task_data(data, sequence, t).client_train[k] for t in range(5)])
        assert np.array_equal(np.sort(rows), data.client_train[k])
    test = task_test_batch(data, (2, 3))
    assert set(test["y"].tolist()) == {2, 3}
    assert len(test["y"]) == int(np.isin(data.dataset.test_y.numpy(), [2, 3]).sum())


def test_a_task_without_data_on_a_client_is_a_config_error_naming_the_task():
    digits = load_digits()
    labels = digits.train_y.numpy()
    # client 1 holds only 0s and 1s: the second task (2 and 3) has nothing on it
    first = np.flatnonzero(np.isin(labels, [0, 1]))
    rest = np.flatnonzero(~np.isin(labels, [0, 1]))
    zero = np.array([], dtype=np.int64)
    data = FederatedDataset(
        digits, (np.sort(np.concatenate([rest, first[::2]])), first[1::2]), (zero, zero)
    )
    sequence = TaskSequence(((0, 1), (2, 3)), rounds_per_task=1)
    task_data(data, sequence, 0)  # fine: both clients hold 0s or 1s
    with pytest.raises(
        ConfigError, match=r"data\.task_sequence\.tasks\[1\].*\[2, 3\].*client\(s\) 1 "
    ):
        task_data(data, sequence, 1)
    with pytest.raises(ConfigError, match=r"tasks\[1\]"):
        check_task_sequence(data, sequence)
