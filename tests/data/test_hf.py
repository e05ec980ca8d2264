"""Hugging Face data sets from local files written here (parquet, CSV, save_to_disk), and
flwr-datasets partitioners used by fedloom; nothing is downloaded."""

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")  # fedloom[hf]; the dev extra installs it
partitioners = pytest.importorskip("flwr_datasets.partitioner")

from fedloom.config import RunConfig  # noqa: E402
from fedloom.config.data import build_dataset, build_federated_data  # noqa: E402
from fedloom.data import Dataset, federate  # noqa: E402
from fedloom.data.hf import FlowerPartitioner, from_hf, load_hf  # noqa: E402
from fedloom.errors import ConfigError, DataError  # noqa: E402

_SITES = {"clinic_a": 7, "clinic_b": 3, "clinic_c": 12}


def _table(n_test=0):
    """Rows of two features, a label and the clinic that holds them (7, 3 and 12 rows)."""
    sites = [site for site, n in _SITES.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    rows = {
        "age": rng.integers(20, 90, len(sites)).astype(float),
        "dose": rng.random(len(sites)),
        "label": rng.integers(0, 3, len(sites)),
        "site": sites,
    }
    return datasets.Dataset.from_dict(rows)


def test_a_parquet_file_with_a_client_column_gives_one_client_per_value(tmp_path):
    _table().to_parquet(str(tmp_path / "train.parquet"))
    _table().select(range(5)).to_parquet(str(tmp_path / "test.parquet"))
    files = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    data = load_hf("parquet", data_files=files, test_split="test", client_column="site")
    assert data.train_x.shape == (22, 2) and data.test_x.shape == (5, 2)
    assert data.train_x.dtype == torch.float32 and data.num_classes == 3
    assert np.bincount(data.train_owner).tolist() == [7, 3, 12]
    config = RunConfig.from_dict({"data": {
        "dataset": "hf", "num_clients": None, "partition": "natural", "holdout_fraction": 0.0,
        "hf": {"path": "parquet", "data_files": files, "test_split": "test",
               "client_column": "site", "input_columns": ["dose", "age"]},
    }})  # fmt: skip
    fed = build_federated_data(config.data, seed=0)
    assert fed.client_sizes.tolist() == [7, 3, 12]
    first = fed.client_data(1)[0][0]  # clinic_b's first row, columns in the order asked
    row = _table()[7]
    assert first.tolist() == pytest.approx([row["dose"], row["age"]])
    assert len(fed.dataset.test_y) == 5


def test_a_json_file_with_text_labels_is_split_and_partitioned_by_fedloom(tmp_path):
    rows = {"x1": np.arange(40.0), "x2": -np.arange(40.0), "kind": ["cat", "dog"] * 20}
    datasets.Dataset.from_dict(rows).to_json(str(tmp_path / "pets.jsonl"))
    data = load_hf("json", data_files=str(tmp_path / "pets.jsonl"), label_column="kind")
    assert data.num_classes == 2 and data.train_owner is None
    assert len(data.test_y) == 8 and data.test_y.tolist().count(0) == 4  # stratified 20%
    assert torch.equal(data.train_y, (data.train_x[:, 0].long() % 2))  # cat = 0, dog = 1
    fed = federate(data, fedloom_iid(4), holdout_fraction=0.0)
    assert fed.client_sizes.tolist() == [8, 8, 8, 8]


def fedloom_iid(k):
    from fedloom.data import IID

    return IID(k)


def test_images_saved_to_disk_come_back_channels_first(tmp_path):
    image = datasets.Image()
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    features = datasets.Features({"img": image, "label": datasets.ClassLabel(num_classes=4)})
    split = datasets.Dataset.from_dict(
        {"img": list(pictures), "label": [0, 1, 2, 3, 0, 1]}, features=features
    )
    datasets.DatasetDict({"train": split, "test": split.select([0, 1])}).save_to_disk(
        str(tmp_path / "pics")
    )
    data = load_hf(str(tmp_path / "pics"), test_split="test")
    assert data.train_x.shape == (6, 3, 5, 4) and data.num_classes == 4
    assert torch.allclose(data.train_x[2, 1], torch.from_numpy(pictures[2, :, :, 1] / 255).float())


def test_bad_columns_are_named():
    with pytest.raises(
        DataError, match=r"no column 'writer'; its columns are age, dose, label, site"
    ):
        from_hf(_table(), client_column="writer")
    with pytest.raises(DataError, match=r"column 'site' is not a numeric scalar column"):
        from_hf(_table(), input_columns=["age", "site"])


def test_a_flower_partitioner_gives_fedloom_the_same_clients():
    """A Flower user's partition (DirichletPartitioner on their Hugging Face data set)
    carries over: client k in fedloom holds exactly Flower's partition k."""
    n = 300
    rng = np.random.default_rng(3)
    table = datasets.Dataset.from_dict(
        {"row": np.arange(n, dtype=float), "label": rng.integers(0, 5, n)}
    )
    options = {"partition_by": "label", "alpha": 0.3, "seed": 7, "min_partition_size": 0}
    theirs = partitioners.DirichletPartitioner(num_partitions=6, **options)
    theirs.dataset = table
    flower_rows = [sorted(theirs.load_partition(k)["row"]) for k in range(6)]
    data = from_hf(table, table.select(range(3)))
    ours = federate(
        data, FlowerPartitioner(partitioners.DirichletPartitioner(6, **options)), holdout_fraction=0
    )
    fedloom_rows = [sorted(ours.client_data(k)[0][:, 0].tolist()) for k in range(6)]
    assert fedloom_rows == flower_rows
    assert len(set(map(len, fedloom_rows))) > 1  # a real label skew, not an even split
    config = RunConfig.from_dict({"data": {"num_clients": 6, "holdout_fraction": 0.0,
                                           "partition": {"kind": "flower",
                                                         "partitioner": "DirichletPartitioner",
                                                         "options": options}}})  # fmt: skip
    from_config = build_federated_data(config.data, seed=0, dataset=data)
    assert [sorted(from_config.client_data(k)[0][:, 0].tolist()) for k in range(6)] == flower_rows


def test_an_iid_flower_partitioner_and_a_bad_name():
    y = torch.arange(12) % 3
    data = Dataset("toy", torch.arange(12.0)[:, None], y, torch.zeros(1, 1), y[:1], num_classes=3)
    fed = federate(data, FlowerPartitioner(partitioners.IidPartitioner(3)), holdout_fraction=0)
    assert [fed.client_data(k)[0][:, 0].tolist() for k in range(3)] == [
        [0.0, 1, 2, 3], [4.0, 5, 6, 7], [8.0, 9, 10, 11]]  # fmt: skip
    config = RunConfig.from_dict(
        {"data": {"num_clients": 3, "partition": {"kind": "flower", "partitioner": "Nope"}}}
    )
    with pytest.raises(ConfigError, match=r"data.partition: unknown flwr-datasets partitioner "
                       r"'Nope'; available: .*DirichletPartitioner"):  # fmt: skip
        build_federated_data(config.data, seed=0, dataset=data)
    missing = RunConfig.from_dict({"data": {"dataset": "hf", "hf": {"path": "/nonexistent/x"}}})
    with pytest.raises(ConfigError, match=r"^data\.hf: Hugging Face data set '/nonexistent/x'"):
        build_dataset(missing.data)
