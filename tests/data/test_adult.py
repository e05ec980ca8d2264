"""The UCI Adult loader on small files in Adult's real CSV format, written here: parsing and
encoding, the sensitive column chosen by name, downloading from a real HTTP server on
127.0.0.1 with a checksum, and the offline message that names the files."""

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch

from fedloom.config import build_federated, load_config
from fedloom.data.adult import load_adult, read_adult_csv
from fedloom.errors import ConfigError, DataError

TRAIN = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K
38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K
53, Private, 234721, 11th, 7, Married-civ-spouse, Handlers-cleaners, Husband, Black, Male, 0, 0, 40, United-States, <=50K
28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 0, 0, 40, Cuba, <=50K
37, Private, 284582, Masters, 14, Married-civ-spouse, Exec-managerial, Wife, White, Female, 0, 0, 40, United-States, <=50K
52, Self-emp-not-inc, 209642, HS-grad, 9, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 45, United-States, >50K
31, Private, 45781, Masters, 14, Never-married, Prof-specialty, Not-in-family, White, Female, 14084, 0, 50, United-States, >50K
42, Private, 159449, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 5178, 0, 40, United-States, >50K
54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male, 0, 0, 60, South, >50K

"""
TEST = """\
|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
38, Private, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, White, Male, 0, 0, 50, United-States, <=50K.
28, Local-gov, 336951, Assoc-acdm, 12, Married-civ-spouse, Protective-serv, Husband, White, Male, 0, 0, 40, United-States, >50K.
44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband, Black, Female, 7688, 0, 40, Peru, >50K.
"""


def _write(folder):
    (folder / "adult").mkdir(parents=True)
    (folder / "adult" / "adult.data").write_text(TRAIN)
    (folder / "adult" / "adult.test").write_text(TEST)
    return folder


def test_rows_labels_groups_and_features(tmp_path):
    data = load_adult(_write(tmp_path), download=False)
    rows = read_adult_csv(tmp_path / "adult" / "adult.test")
    assert len(rows) == 4 and rows[2][-1] == ">50K"  # the header line and the period are gone
    assert data.train_y.tolist() == [0] * 6 + [1] * 4 and data.test_y.tolist() == [0, 0, 1, 1]
    assert data.train_extra["s"].tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]  # Female 0, Male 1
    assert data.test_extra["s"].tolist() == [1, 1, 1, 0]
    # 6 numeric columns + one-hot categories seen in training: workclass 4 (with ?),
    # education 5, marital 3, occupation 5 (with ?), relationship 3, race 3, sex 2, country 3
    assert data.train_x.shape == (10, 6 + 4 + 5 + 3 + 5 + 3 + 3 + 2 + 3)
    age = data.train_x[:, 0].double()
    assert float(age.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(age.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert torch.all(data.train_x[:, 6:].sum(1) == 8)  # one category per categorical column
    # the last test row has an occupation and a country unseen in training: zeros there
    assert float(data.test_x[3, 6:].sum()) == 6.0
    by_race = load_adult(tmp_path, sensitive="race", drop_sensitive=True, download=False)
    assert by_race.train_extra["s"].tolist() == [
        2,
        2,
        2,
        1,
        1,
        2,
        2,
        2,
        2,
        0,
    ]  # Asian, Black, White
    assert by_race.train_x.shape[1] == data.train_x.shape[1] - 3
    with pytest.raises(ValueError, match="sensitive: Adult has no categorical column 'age'"):
        load_adult(tmp_path, sensitive="age", download=False)


def test_a_row_with_missing_fields_is_named(tmp_path):
    _write(tmp_path)
    (tmp_path / "adult" / "adult.data").write_text(TRAIN + "39, State-gov, 77516\n")
    with pytest.raises(DataError, match=r"adult.data line 12 has 3 fields, expected 15"):
        load_adult(tmp_path, download=False)


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder that holds the two files."""
    served = _write(tmp_path / "mirror") / "adult"
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_downloads_are_checked_and_cached(tmp_path, server):
    sums = {n: hashlib.sha256(t.encode()).hexdigest() for n, t in (("adult.data", TRAIN), ("adult.test", TEST))}  # fmt: skip
    root = tmp_path / "root"
    data = load_adult(root, mirrors=["http://127.0.0.1:1/", server], checksums=sums)
    assert data.train_y.shape == (10,)
    assert (root / "adult" / "adult.data").read_text() == TRAIN
    assert not list((root / "adult").glob("*.part"))
    again = load_adult(root, download=False)  # from the cache
    assert torch.equal(again.train_x, data.train_x)


def test_a_download_with_the_wrong_checksum_is_not_kept(tmp_path, server):
    root = tmp_path / "root"
    wrong = {"adult.data": "0" * 64, "adult.test": None}
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load_adult(root, mirrors=[server], checksums=wrong)
    assert "Put the two files adult.data, adult.test" in str(error.value)
    assert not (root / "adult" / "adult.data").exists()
    assert not list((root / "adult").glob("*"))


def test_offline_the_message_names_the_files_and_the_folder(tmp_path):
    with pytest.raises(DataError) as error:
        load_adult(tmp_path, mirrors=["http://127.0.0.1:1/"])
    message = str(error.value)
    assert "adult.data is not in" in message and "could not be downloaded" in message
    assert "adult.data, adult.test" in message and str(tmp_path / "adult") in message
    with pytest.raises(DataError, match="put adult.data and adult.test there"):
        load_adult(tmp_path, download=False)


def test_adult_from_the_config_with_the_sensitive_column_by_name(tmp_path):
    root = _write(tmp_path)
    config = load_config(None, ["data.dataset=adult", f"data.root={root}",
                                "data.adult.sensitive=race", "data.num_clients=2",
                                "data.partition=iid"])  # fmt: skip
    data = build_federated(config)
    assert data.num_clients == 2 and data.dataset.name == "adult(s=race)"
    assert np.array_equal(np.unique(data.dataset.train_extra["s"].numpy()), [0, 1, 2])
    wrong = load_config(None, ["data.dataset=adult", f"data.root={root}", "data.adult.sensitive=gender"])  # fmt: skip
    with pytest.raises(ConfigError, match="data.adult.sensitive: Adult has no categorical column 'gender'"):  # fmt: skip
        build_federated(wrong)
