"""LEAF FEMNIST and Shakespeare from small JSON files written here in LEAF's format."""

import json

import numpy as np
import pytest
import torch

import fedloom as fl
from fedloom.config import RunConfig
from fedloom.config.build import build_model
from fedloom.config.data import build_dataset, build_federated_data
from fedloom.data.leaf import SHAKESPEARE_LETTERS, load_femnist, load_shakespeare
from fedloom.errors import ConfigError, DataError, DataMissing
from fedloom.models import shakespeare_lstm


def _write(folder, name, users):
    """One LEAF JSON file: ``users`` maps a user to its (x, y) lists."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }
    (folder / name).write_text(json.dumps(document))


def _femnist(root):
    rng = np.random.default_rng(0)

    def writer(n, label0):
        return rng.random((n, 784)).round(3).tolist(), [(label0 + i) % 62 for i in range(n)]

    train = root / "femnist" / "train"
    _write(train, "all_data_0_train.json", {"f0000_14": writer(5, 0), "f0001_41": writer(3, 60)})
    _write(train, "all_data_1_train.json", {"f0002_07": writer(7, 10)})
    test = root / "femnist" / "test"
    _write(test, "all_data_0_test.json", {"f0000_14": writer(2, 0), "f0001_41": writer(1, 5)})
    _write(test, "all_data_1_test.json", {"f0002_07": writer(2, 3)})


def test_femnist_has_one_client_per_writer(tmp_path):
    _femnist(tmp_path)
    data = load_femnist(tmp_path)
    assert data.train_x.shape == (15, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    assert data.num_classes == 62
    assert data.train_owner.tolist() == [0] * 5 + [1] * 3 + [2] * 7
    assert data.train_y[5:8].tolist() == [60, 61, 0]
    config = RunConfig.from_dict(
        {"data": {"dataset": "femnist", "root": str(tmp_path), "num_clients": None,
                  "partition": "natural", "holdout_fraction": 0.0}}
    )  # fmt: skip
    fed = build_federated_data(config.data, seed=0)
    assert fed.client_sizes.tolist() == [5, 3, 7]
    assert build_dataset(config.data).train_x.max() <= 1.0  # auto: LEAF's [0, 1] pixels


def test_leaf_files_that_disagree_or_are_cut_are_refused_by_name(tmp_path):
    _femnist(tmp_path)
    path = tmp_path / "femnist" / "train" / "all_data_1_train.json"
    document = json.loads(path.read_text())
    document["num_samples"] = [8]
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"all_data_1_train\.json: user 'f0002_07' has 7 inputs, "
                       "7 targets and num_samples 8"):  # fmt: skip
        load_femnist(tmp_path)
    text = json.dumps({**document, "num_samples": [7]})
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"all_data_1_train\.json is not a readable LEAF JSON file"):
        load_femnist(tmp_path)
    document["user_data"]["f0002_07"]["x"][3] = [0.5] * 783
    path.write_text(json.dumps({**document, "num_samples": [7]}))
    with pytest.raises(DataError, match=r"all_data_1_train\.json: user 'f0002_07': .*784"):
        load_femnist(tmp_path)


def test_missing_leaf_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(DataMissing, match=r"LEAF shakespeare train files \(\*\.json\) not found in "
                       r".*shakespeare/train.*preprocess\.sh"):  # fmt: skip
        load_shakespeare(tmp_path)
    config = RunConfig.from_dict({"data": {"dataset": "femnist", "root": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^data\.root: LEAF femnist train files"):
        build_dataset(config.data)


_PLAY = "To be, or not to be: that is the question. "


def _lines(role_text, n, length=12):
    """n (x, y) pairs: ``length`` characters of a role's text and the one after."""
    text = role_text * 20
    return [text[i : i + length] for i in range(n)], [text[i + length] for i in range(n)]


def _shakespeare(root, length=12):
    roles = {"THE_TRAGEDY_OF_HAMLET_HAMLET": (_PLAY, 40), "KING_LEAR_FOOL": ("Nuncle, fool! ", 25),
             "OTHELLO_IAGO": ("I am not what I am. ", 30)}  # fmt: skip
    train = {u: _lines(text, n, length) for u, (text, n) in roles.items()}
    test = {u: _lines(text[3:] + text[:3], 6, length) for u, (text, _) in roles.items()}
    _write(root / "shakespeare" / "data" / "train", "all_data_niid_0_train.json", train)
    _write(root / "shakespeare" / "data" / "test", "all_data_niid_0_test.json", test)
    return train


def test_shakespeare_encodes_characters_with_leafs_letters(tmp_path):
    train = _shakespeare(tmp_path)
    data = load_shakespeare(tmp_path)
    assert len(SHAKESPEARE_LETTERS) == 80 and data.num_classes == 80
    assert data.train_x.dtype == torch.int64 and data.train_x.shape == (95, 12)
    first_x, first_y = (
        train["THE_TRAGEDY_OF_HAMLET_HAMLET"][0][0],
        train["THE_TRAGEDY_OF_HAMLET_HAMLET"][1][0],
    )
    assert "".join(SHAKESPEARE_LETTERS[i] for i in data.train_x[0]) == first_x == "To be, or no"
    assert SHAKESPEARE_LETTERS[int(data.train_y[0])] == first_y == "t"
    assert SHAKESPEARE_LETTERS.index("T") == 44 and int(data.train_x[0, 0]) == 44  # 25 before "A"
    assert np.bincount(data.train_owner).tolist() == [40, 25, 30]
    test_file = tmp_path / "shakespeare" / "data" / "test" / "all_data_niid_0_test.json"
    _write(test_file.parent, test_file.name, {"OTHELLO_IAGO": _lines("I am not", 3, length=5)})
    with pytest.raises(DataError, match=r"mix input shapes \[\(5,\), \(12,\)\]; every user"):
        load_shakespeare(tmp_path)
    path = tmp_path / "shakespeare" / "data" / "train" / "all_data_niid_0_train.json"
    path.write_text(path.read_text().replace("Nuncle", "Nuncl\\u00e9"))
    with pytest.raises(DataError, match=r"all_data_niid_0_train\.json: user 'KING_LEAR_FOOL': "
                       r"character 'é' is not one of LEAF's 80 letters"):  # fmt: skip
        load_shakespeare(tmp_path)


def test_shakespeare_lstm_learns_the_next_character_per_role(tmp_path):
    """Three roles, each repeating its own line: the next character is a function of the
    last few, so a small LSTM trained federated (one client per role) predicts it."""
    _shakespeare(tmp_path)
    config = RunConfig.from_dict(
        {"data": {"dataset": "shakespeare", "root": str(tmp_path), "num_clients": None,
                  "partition": "natural", "holdout_fraction": 0.0}}
    )  # fmt: skip
    fed = build_federated_data(config.data, seed=0)
    assert fed.num_clients == 3
    assert build_model(config, fed.dataset) is not None  # auto: shakespeare_lstm fits
    history = fl.simulate(
        fl.fedavg(), fed, lambda: shakespeare_lstm(80, hidden=32, layers=1), rounds=30, fraction=1.0,
        local=fl.LocalTraining(epochs=2, batch_size=10, lr=1.0), engine="sequential", seed=1,
    )  # fmt: skip
    first, last = history.reports[0].metrics, history.reports[-1].metrics
    assert first["test_accuracy"] < 0.5
    assert last["test_accuracy"] > 0.9, last
    with pytest.raises(ConfigError, match="data.normalize: shakespeare's inputs are character"):
        build_dataset(config.data.model_copy(update={"normalize": "standardize"}))
