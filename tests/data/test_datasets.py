import gzip

import numpy as np
import pytest
import torch

from fedloom.data import federate, load_mnist, load_synthetic, partition
from fedloom.data.mnist import read_idx
from fedloom.errors import DataError


def test_digits_split_is_fixed_and_stratified(digits):
    assert digits.train_x.shape[1:] == (1, 8, 8)
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert float(digits.train_x.max()) == 1.0
    test_hist = np.bincount(digits.test_y.numpy(), minlength=10)
    assert test_hist.min() >= 35  # ~20% of every digit


def test_mnist_has_the_canonical_sizes(mnist):
    assert mnist.train_x.shape == (60_000, 1, 28, 28)
    assert mnist.test_x.shape == (10_000, 1, 28, 28)
    assert np.bincount(mnist.train_y.numpy()).tolist()[:3] == [5923, 6742, 5958]
    # standardized with the training-set mean/std
    assert abs(float(mnist.train_x.mean())) < 0.01
    assert abs(float(mnist.train_x.std()) - 1.0) < 0.01


def test_missing_mnist_offline_names_files_and_place(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\(\.gz\) not found in .*mnist"):
        load_mnist(tmp_path, download=False)


def test_read_idx_checks_header_and_length(tmp_path):
    good = tmp_path / "x-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 8, 9]))
    assert read_idx(good).tolist() == [7, 8, 9]
    not_gzip = tmp_path / "bad-idx1-ubyte.gz"
    not_gzip.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match="bad-idx1-ubyte.gz cannot be read \\(BadGzipFile"):
        read_idx(not_gzip)
    cut = tmp_path / "cut-idx1-ubyte.gz"
    cut.write_bytes(good.read_bytes()[:-6])
    with pytest.raises(DataError, match="cut-idx1-ubyte.gz cannot be read"):
        read_idx(cut)
    truncated = tmp_path / "t-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + bytes([1]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(truncated)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(junk)


def test_synthetic_follows_the_generator():
    data = load_synthetic(1.0, 1.0, num_devices=30, seed=3)
    assert data.train_x.shape[1] == 60 and data.num_classes == 10
    parts = partition.natural(data.train_owner)
    assert len(parts) == 30
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 40  # 80% of at least 50
    assert sizes.max() > 5 * np.median(sizes)  # power law
    # Input covariance is diag(j^-1.2) around the device mean: late features vary less.
    device0 = data.train_x[torch.from_numpy(parts[int(np.argmax(sizes))])]
    variances = device0.var(0)
    assert float(variances[:5].mean()) > 3 * float(variances[-5:].mean())
    # Same seed, same data.
    again = load_synthetic(1.0, 1.0, num_devices=30, seed=3)
    assert torch.equal(again.train_x, data.train_x)


def test_synthetic_iid_shares_one_model():
    data = load_synthetic(num_devices=10, iid=True, seed=0)
    assert data.name == "synthetic_iid"
    assert len(np.unique(data.train_owner)) == 10


def test_federate_holdout_is_disjoint_and_complete(digits):
    fed = federate(
        digits,
        lambda ds, rng: partition.dirichlet(ds.train_y.numpy(), 20, alpha=0.5, rng=rng),
        holdout_fraction=0.1,
        seed=1,
    )
    assert fed.num_clients == 20
    for train, holdout in zip(fed.client_train, fed.client_holdout, strict=True):
        assert len(np.intersect1d(train, holdout)) == 0
        assert len(holdout) == round(0.1 * (len(train) + len(holdout)))
    everything = np.concatenate([*fed.client_train, *fed.client_holdout])
    assert np.array_equal(np.sort(everything), np.arange(digits.num_train))
    hist = fed.label_histograms()
    assert hist.sum(1).tolist() == fed.client_sizes.tolist()
    row = fed.describe()[0]
    assert set(row) == {"client", "train", "holdout", "labels", "histogram"}


def test_federate_refuses_empty_clients(digits):
    with pytest.raises(DataError, match="received no examples"):
        federate(digits, [np.arange(digits.num_train), np.array([], dtype=np.int64)])


def test_partitioner_values_match_the_pure_functions(digits):
    from fedloom.data import IID, Dirichlet, Natural, QuantitySkew, Shards

    rng = np.random.default_rng
    labels = digits.train_y.numpy()
    cases = [
        (Shards(10, 2), partition.shards(labels, 10, shards_per_client=2, rng=rng(4))),
        (Dirichlet(10, 0.3), partition.dirichlet(labels, 10, alpha=0.3, rng=rng(4))),
        (IID(7), partition.iid(len(labels), 7, rng=rng(4))),
        (
            QuantitySkew(9, 1.0, 5),
            partition.quantity_skew(len(labels), 9, sigma=1.0, min_size=5, rng=rng(4)),
        ),
    ]
    for partitioner, expected in cases:
        got = partitioner(digits, rng(4))
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)), partitioner
    with pytest.raises(DataError, match="needs a dataset with owners"):
        Natural()(digits, rng(0))


def test_natural_partition_from_config():
    from fedloom.config import build_federated, load_config
    from fedloom.errors import ConfigError

    config = load_config(
        None, ["data.dataset=synthetic", "data.partition=natural", "data.num_clients=null"]
    )
    fed = build_federated(config)
    assert fed.num_clients == 30
    with pytest.raises(ConfigError, match="has 30 natural clients, got 20"):
        build_federated(load_config(None, ["data.dataset=synthetic", "data.partition=natural"]))


def test_mnist_downloads_from_a_mirror_and_validates(tmp_path, monkeypatch):
    """A real HTTP server on loopback plays the mirror: files are fetched, checked, cached."""
    import functools
    import http.server
    import shutil
    import threading

    import fedloom.data.mnist as mnist_module
    from conftest import mnist_root
    from fedloom.data.mnist import MNIST_FILES

    source = mnist_root()
    if source is None:
        pytest.skip("needs the MNIST files under FEDLOOM_DATA to serve them")
    served = tmp_path / "served"
    served.mkdir()
    for stem in MNIST_FILES.values():
        shutil.copy(source / "mnist" / f"{stem}.gz", served / f"{stem}.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead = "http://127.0.0.1:9/"  # nothing listens on port 9: the loader falls through
        monkeypatch.setattr(
            mnist_module, "MIRRORS", (dead, f"http://127.0.0.1:{server.server_port}/")
        )
        data = load_mnist(tmp_path / "root")
    finally:
        server.shutdown()
        server.server_close()
    assert data.train_x.shape == (60_000, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in MNIST_FILES.values()
    )


def test_example_configs_are_valid():
    from pathlib import Path

    from fedloom.config import load_config

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert len(examples) >= 2
    for path in examples:
        load_config(path)


def _write_mnist(folder, images, labels):
    """Four tiny IDX files in MNIST's format: ``images`` [N, 28, 28] uint8 for train and test."""
    import gzip
    import struct

    import numpy as np

    from fedloom.data.mnist import MNIST_FILES

    folder.mkdir(parents=True)
    n = len(labels)
    image_bytes = struct.pack(">HBBIII", 0, 0x08, 3, n, 28, 28) + images.astype(np.uint8).tobytes()
    label_bytes = struct.pack(">HBBI", 0, 0x08, 1, n) + labels.astype(np.uint8).tobytes()
    for key, stem in MNIST_FILES.items():
        data = image_bytes if key.endswith("images") else label_bytes
        (folder / f"{stem}.gz").write_bytes(gzip.compress(data))


def test_normalize_none_keeps_raw_pixels_and_standardize_uses_train_statistics(tmp_path):
    import numpy as np

    from fedloom.config import RunConfig
    from fedloom.config.data import build_dataset
    from fedloom.data.mnist import MNIST_MEAN, MNIST_STD

    pixels = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_mnist(tmp_path / "mnist", pixels, np.array([1, 2, 3]))
    raw = build_dataset(RunConfig.from_dict({"data": {"dataset": "mnist", "root": str(tmp_path),
                                                      "normalize": "none"}}).data)  # fmt: skip
    assert raw.train_x.min() == 0.0 and raw.train_x.max() == 1.0
    assert raw.train_x[0, 0, 0, 5].item() == pytest.approx(5 / 255)
    auto = build_dataset(RunConfig.from_dict({"data": {"dataset": "mnist",
                                                       "root": str(tmp_path)}}).data)  # fmt: skip
    assert torch.allclose(auto.train_x, (raw.train_x - MNIST_MEAN) / MNIST_STD)
    # digits: auto keeps [0, 1]; standardize uses the training set's mean and std, for both
    digits_auto = build_dataset(RunConfig.from_dict({}).data)
    digits = build_dataset(RunConfig.from_dict({"data": {"normalize": "standardize"}}).data)
    mean, std = digits_auto.train_x.double().mean(), digits_auto.train_x.double().std()
    assert float(digits.train_x.double().mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(digits.train_x.double().std()) == pytest.approx(1.0, abs=1e-6)
    expected_test = (digits_auto.test_x.double() - mean) / std
    assert torch.allclose(digits.test_x.double(), expected_test, atol=1e-6)


def test_normalize_is_checked_and_auto_leaves_the_fingerprint_alone():
    from fedloom.config import RunConfig
    from fedloom.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.normalize.*'auto', 'standardize' or 'none'"):
        RunConfig.from_dict({"data": {"normalize": "zscore"}})
    auto = RunConfig.from_dict({})  # the default fingerprint itself is pinned elsewhere
    assert auto.fingerprint() == RunConfig.from_dict({"data": {"normalize": "auto"}}).fingerprint()
    assert (
        auto.fingerprint()
        != RunConfig.from_dict({"data": {"normalize": "standardize"}}).fingerprint()
    )
