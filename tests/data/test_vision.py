"""FashionMNIST, EMNIST and CIFAR-10 from small files written here in the real formats (IDX,
NIST's gzip.zip, CIFAR-10 binary batches and their tar.gz); nothing is downloaded."""

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.config import RunConfig, load_config
from fedloom.config.build import build_model
from fedloom.config.data import build_dataset
from fedloom.data.vision import load_cifar10, load_emnist, load_fashion_mnist
from fedloom.errors import DataError, DataMissing

_IDX = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}  # fmt: skip


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(folder, stem, array, *, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    data = _idx_bytes(array)
    if gz:
        (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
    else:
        (folder / stem).write_bytes(data)


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _fashion(root, n_train=12, n_test=5):
    folder = root / "fashion_mnist"
    arrays = {"train_images": _images(n_train, 1), "train_labels": np.arange(n_train) % 10,
              "test_images": _images(n_test, 2), "test_labels": np.arange(n_test) % 10}  # fmt: skip
    for key, stem in _IDX.items():
        _write_idx(folder, stem, arrays[key])
    return arrays


def test_fashion_mnist_reads_idx_files_raw_and_standardized(tmp_path):
    arrays = _fashion(tmp_path)
    raw = load_fashion_mnist(tmp_path, standardize=False, verify=False, download=False)
    assert raw.name == "fashion_mnist" and raw.num_classes == 10
    assert raw.train_x.shape == (12, 1, 28, 28) and raw.test_x.shape == (5, 1, 28, 28)
    assert torch.equal(raw.train_x[3, 0], torch.from_numpy(arrays["train_images"][3] / 255).float())
    assert raw.train_y.tolist() == (np.arange(12) % 10).tolist()
    scaled = load_fashion_mnist(tmp_path, verify=False, download=False)
    assert float(scaled.train_x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scaled.train_x.std()) == pytest.approx(1.0, abs=1e-4)


def test_fashion_mnist_is_found_where_torchvision_put_it(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"  # torchvision's layout, files uncompressed
    for key, stem in _IDX.items():
        n = 4 if key.startswith("train") else 2
        _write_idx(folder, stem, _images(n, 0) if "images" in key else np.arange(n), gz=False)
    data = load_fashion_mnist(tmp_path, verify=False, download=False)
    assert data.num_train == 4 and len(data.test_y) == 2
    with pytest.raises(DataError, match=r"raw/train-images-idx3-ubyte is corrupt or not the "
                       "published file: the SHA-256 of its contents is .*, expected c59f468a"):  # fmt: skip
        load_fashion_mnist(tmp_path, download=False)  # the published bytes, gunzipped or not


def test_the_real_fashion_mnist_when_present(tmp_path):
    """The published files, or Debian's recompressed copy (package dataset-fashion-mnist):
    either passes the check, which reads the uncompressed bytes."""
    import os

    candidates = [Path(os.environ.get("FEDLOOM_DATA", "/nonexistent")) / "fashion_mnist",
                  Path("/usr/share/datasets/fashion-mnist")]  # fmt: skip
    folder = next((c for c in candidates if (c / "train-images-idx3-ubyte.gz").exists()), None)
    if folder is None:
        pytest.skip("FashionMNIST is not under FEDLOOM_DATA nor installed from Debian")
    (tmp_path / "fashion_mnist").symlink_to(folder)
    data = load_fashion_mnist(tmp_path, download=False)
    assert data.train_x.shape == (60_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert np.bincount(data.train_y.numpy()).tolist() == [6000] * 10


def test_checksums_refuse_files_that_are_not_the_published_ones(tmp_path):
    _fashion(tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is corrupt or not the "
                       r"published file: its SHA-256 is [0-9a-f]{64}, expected 08dc20ab"):  # fmt: skip
        load_fashion_mnist(tmp_path, download=False)


def test_a_truncated_or_corrupt_idx_file_is_refused_by_name(tmp_path):
    _fashion(tmp_path)
    labels = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-2]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is truncated or corrupt"):
        load_fashion_mnist(tmp_path, verify=False, download=False)
    labels.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz cannot be read"):
        load_fashion_mnist(tmp_path, verify=False, download=False)


def test_labels_out_of_range_are_refused(tmp_path):
    _fashion(tmp_path)
    _write_idx(tmp_path / "fashion_mnist", _IDX["test_labels"], np.array([0, 1, 2, 3, 12]))
    with pytest.raises(DataError, match=r"labels in .*fashion_mnist lie in \[0, 12\]"):
        load_fashion_mnist(tmp_path, verify=False, download=False)


def test_missing_files_offline_name_the_files_and_the_folder(tmp_path):
    with pytest.raises(DataMissing, match=r"FashionMNIST file train-images-idx3-ubyte\.gz not "
                       r"found in .*fashion_mnist\. Put train-images-idx3-ubyte\.gz, "):  # fmt: skip
        load_fashion_mnist(tmp_path, download=False)
    with pytest.raises(DataMissing, match=r"CIFAR-10 file cifar-10-binary\.tar\.gz not found in "
                       r".*cifar10\. Put cifar-10-binary\.tar\.gz \(or its extracted cifar-10-batches-bin/ "
                       r"folder: data_batch_1\.bin, .*test_batch\.bin\) in .*cifar10 \(or point"):  # fmt: skip
        load_cifar10(tmp_path, download=False)
    with pytest.raises(DataMissing, match=r"EMNIST files emnist-digits-train-images-idx3-ubyte\.gz"
                       r".* not found in .*emnist\. Put them there, or NIST's gzip\.zip"):  # fmt: skip
        load_emnist(tmp_path, "digits", download=False)


def _emnist_arrays(n_train=6, n_test=3, low=0, high=10):
    rng = np.random.default_rng(5)
    return {"train-images": _images(n_train, 3), "train-labels": rng.integers(low, high, n_train),
            "test-images": _images(n_test, 4), "test-labels": rng.integers(low, high, n_test)}  # fmt: skip


def _emnist_stem(split, key):
    part, kind = key.split("-")
    return f"emnist-{split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def test_emnist_images_come_back_upright_and_letters_from_zero(tmp_path):
    arrays = _emnist_arrays(low=1, high=27)  # letters are stored 1..26
    for key, array in arrays.items():
        _write_idx(tmp_path / "emnist", _emnist_stem("letters", key), array)
    data = load_emnist(tmp_path, "letters", standardize=False, verify=False, download=False)
    assert data.name == "emnist_letters" and data.num_classes == 26
    stored = arrays["train-images"][2]
    assert torch.equal(data.train_x[2, 0], torch.from_numpy(stored.T / 255).float())  # transposed
    assert data.train_y.tolist() == (arrays["train-labels"] - 1).tolist()


def test_emnist_split_is_taken_out_of_nists_zip(tmp_path):
    arrays = _emnist_arrays()
    folder = tmp_path / "emnist"
    folder.mkdir()
    with zipfile.ZipFile(folder / "gzip.zip", "w") as zf:
        for split in ("digits", "mnist"):
            for key, array in arrays.items():
                zf.writestr(f"gzip/{_emnist_stem(split, key)}.gz", gzip.compress(_idx_bytes(array)))
    data = load_emnist(tmp_path, "digits", standardize=False, verify=False, download=False)
    assert data.train_y.tolist() == arrays["train-labels"].tolist() and data.num_classes == 10
    assert sorted(p.name for p in folder.glob("emnist-*")) == sorted(
        f"{_emnist_stem('digits', key)}.gz" for key in arrays
    )
    with pytest.raises(DataError, match=r"emnist-mnist-train-images-idx3-ubyte\.gz is corrupt or "
                       "not the published file"):  # fmt: skip
        load_emnist(tmp_path, "mnist", download=False)  # the test's members are not NIST's
    (folder / "gzip.zip").write_bytes((folder / "gzip.zip").read_bytes()[:100])
    for path in folder.glob("emnist-mnist-*"):
        path.unlink()
    with pytest.raises(DataError, match=r"gzip\.zip is not NIST's EMNIST gzip\.zip or is damaged"):
        load_emnist(tmp_path, "mnist", download=False, verify=False)


def _cifar_records(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return labels, pixels, np.concatenate([labels[:, None], pixels], axis=1).tobytes()


def _cifar_files(seed0=0):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    return {name: _cifar_records(3 if name != "test_batch.bin" else 4, seed0 + k)
            for k, name in enumerate(names)}  # fmt: skip


def test_cifar10_reads_the_binary_batches_channel_major(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    files = _cifar_files()
    for name, (_, _, data) in files.items():
        (folder / name).write_bytes(data)
    raw = load_cifar10(tmp_path, standardize=False, download=False)
    assert raw.train_x.shape == (15, 3, 32, 32) and raw.test_x.shape == (4, 3, 32, 32)
    labels, pixels, _ = files["data_batch_2.bin"]
    assert raw.train_y[3:6].tolist() == labels.tolist()
    red = torch.from_numpy(pixels[1, :1024].reshape(32, 32) / 255).float()  # the first plane
    assert torch.equal(raw.train_x[4, 0], red)
    assert raw.train_x[4, 2, 0, 5] == pixels[1, 2048 + 5] / 255  # blue, row 0, column 5
    scaled = load_cifar10(tmp_path, download=False)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(scaled.test_x[1, :, 7, 9], (raw.test_x[1, :, 7, 9] - mean) / std)
    (folder / "data_batch_3.bin").write_bytes(files["data_batch_3.bin"][2][:-10])
    with pytest.raises(DataError, match=r"data_batch_3\.bin is truncated or not a CIFAR-10 binary"):
        load_cifar10(tmp_path, download=False)
    bad = bytearray(files["data_batch_3.bin"][2])
    bad[3073] = 200  # the second record's label byte
    (folder / "data_batch_3.bin").write_bytes(bytes(bad))
    with pytest.raises(
        DataError, match=r"data_batch_3\.bin is corrupt .* record 1 has label byte 200"
    ):
        load_cifar10(tmp_path, download=False)


def test_cifar10_reads_the_tar_gz_in_place_and_checks_it(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    files = _cifar_files(seed0=10)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, (_, _, data) in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = folder / "cifar-10-binary.tar.gz"
    archive.write_bytes(buffer.getvalue())
    data = load_cifar10(tmp_path, standardize=False, verify=False, download=False)
    assert data.test_y.tolist() == files["test_batch.bin"][0].tolist()
    assert not (folder / "cifar-10-batches-bin").exists()  # nothing was extracted
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz is corrupt or not the published "
                       "file: its SHA-256 is .* expected c4a38c50"):  # fmt: skip
        load_cifar10(tmp_path, download=False)
    archive.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(
        DataError, match=r"cifar-10-binary\.tar\.gz is truncated or not the CIFAR-10"
    ):
        load_cifar10(tmp_path, download=False, verify=False)


def test_the_config_reads_each_data_set(tmp_path):
    _fashion(tmp_path)
    for key, array in _emnist_arrays().items():
        _write_idx(tmp_path / "emnist", _emnist_stem("digits", key), array)
    (tmp_path / "cifar10" / "cifar-10-batches-bin").mkdir(parents=True)
    for name, (_, _, data) in _cifar_files().items():
        (tmp_path / "cifar10" / "cifar-10-batches-bin" / name).write_bytes(data)
    shapes = {}
    for name, extra in (("fashion_mnist", {}), ("emnist", {"emnist": {"split": "digits"}}),
                        ("cifar10", {})):  # fmt: skip
        data = {"dataset": name, "root": str(tmp_path), "verify": False, **extra}
        config = RunConfig.from_dict({"data": data})
        shapes[name] = tuple(build_dataset(config.data).input_shape)
        if name == "emnist":  # a non-default split enters the fingerprint
            assert (
                config.fingerprint()
                != RunConfig.from_dict(
                    {"data": {**data, "emnist": {"split": "balanced"}}}
                ).fingerprint()
            )
    assert shapes == {"fashion_mnist": (1, 28, 28), "emnist": (1, 28, 28), "cifar10": (3, 32, 32)}
    example = Path(__file__).parents[2] / "examples" / "cifar10_resnet.yaml"
    config = load_config(example, [f"data.root={tmp_path}", "data.verify=false"])
    dataset = build_dataset(config.data)
    model = build_model(config, dataset)()  # cifar_resnet fits CIFAR-10's images
    assert model(dataset.test_x[:2]).shape == (2, 10)
