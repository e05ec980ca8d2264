"""FashionMNIST, EMNIST and CIFAR-10 from their published files, read by fedloom itself.

Why not torchvision: its wheels on PyPI are built against the CUDA build of torch and fail
to load beside the CPU build this project installs ("operator torchvision::nms does not
exist": its compiled ops link ``libtorch_cuda.so``); the torch + torchvision pair that does
load is a 5.5 GB CUDA install, too heavy for CI. The formats are simple, so fedloom reads
them directly, with no torchvision and no unpickling:

- FashionMNIST (Xiao et al. 2017) and EMNIST (Cohen et al. 2017) are IDX files like MNIST,
  read by :func:`fedloom.data.mnist.read_idx`. A torchvision download is found too
  (``<root>/FashionMNIST/raw/``, ``<root>/EMNIST/raw/``).
- CIFAR-10 (Krizhevsky 2009) is read from its *binary* version (``cifar-10-binary.tar.gz``:
  records of 1 label byte + 3,072 pixel bytes, channel-major), never from the python
  version, which is pickled.

Downloads, SHA-256 checks and offline messages follow :mod:`fedloom.data.files`. The
digests are those of the published files (CIFAR-10's as TFDS pins it; EMNIST's of the
members of NIST's ``gzip.zip``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from fedloom.data.dataset import Dataset, standardized
from fedloom.data.files import Remote, check_sha256, data_folder, fetch
from fedloom.data.mnist import MNIST_FILES, read_idx
from fedloom.errors import DataError, DataMissing

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "EMNIST_CLASSES",
    "load_cifar10",
    "load_emnist",
    "load_fashion_mnist",
    "read_cifar_binary",
]

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_SHA256 = {
    "train-images-idx3-ubyte": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
_FASHION_RAW_SHA256 = {  # of the uncompressed IDX bytes, whatever the compression
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

_EMNIST_ZIP = Remote(
    "gzip.zip",
    ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",),
    sha256="",  # the members are checked one by one (below), the archive by its CRCs
)
EMNIST_CLASSES = {
    "balanced": 47,
    "byclass": 62,
    "bymerge": 47,
    "digits": 10,
    "letters": 26,
    "mnist": 10,
}
"""Labels of each EMNIST split (``letters`` is stored as 1..26; it is shifted to 0..25)."""
_EMNIST_SHA256 = {  # (split, file stem) -> SHA-256 of the .gz member of gzip.zip
    ("balanced", "test-images"): "117fc12b015e37ea98bfb2cbba3f77c3782c056cdbd219b87abfc8661d7135db",
    ("balanced", "test-labels"): "a67cac948379b67270b9a4d0a01c8ec661598accf2f2b1964340b7c83cb175cd",
    (
        "balanced",
        "train-images",
    ): "74295e75e4e9fa2c102147460ee7eb763653d5132d883a84fb88932bfb8d2db4",
    (
        "balanced",
        "train-labels",
    ): "b46d41e5156a0a8aaaa4d18979fdd1588850fa8571018acffd5d93b325a7d6ed",
    ("byclass", "test-images"): "5ec835bd5d5b1a66378a132e727fef20fe994b3cc666899befcca5ac766f50cd",
    ("byclass", "test-labels"): "501e305eeeacb093b162592d80e8a2632040872360fa6d85cfcb2200d91ca92a",
    ("byclass", "train-images"): "9e21987f03a6eb8b870187e785883ddad96947299587908f1a7ec2ca0f4be5f0",
    ("byclass", "train-labels"): "f7ef403d48dc18a89dae0d83d11ee69cecb6e1c12c3a961d03712e495c02a8fa",
    ("bymerge", "test-images"): "5e5815ec1b522089134435f7c55e75a00960b58414793593ffff23efc0821683",
    ("bymerge", "test-labels"): "8bda1516255683ba9071e141947ca0c91a911176065cdd6259b0b4d8dc5b5f35",
    ("bymerge", "train-images"): "39bf8c68037dad40db35348895f7e4e056e8c0a005ab78869c9fbc2c96e947be",
    ("bymerge", "train-labels"): "2c47293b9e62d6abf6ad05fbf67e40baa32adfd380b8d7b44dcc35534b64e1f1",
    ("digits", "test-images"): "20ebe43509264f7639d37c835a3f0b009e90b29e00a099a03101abe1644a3f63",
    ("digits", "test-labels"): "bad1834c45d5988e270b99d43b13edc3fd898f658ffbc2caf2846ef27f7b05b0",
    ("digits", "train-images"): "f7c95004d14d81af89522e67d8f0c781dfb3bd544181c81bfe1eb6b41c35b726",
    ("digits", "train-labels"): "6638a6ff5fe2eefd9cca2471995b46c82986b8e4b2a70d2f5ce8e05d7edb319e",
    ("letters", "test-images"): "50f0e93d75b99b463e9760b8345866f22587fa2c2fba472730a5ba09c693412d",
    ("letters", "test-labels"): "924955c31fe7fd809b7303b5c0141282955f4b8390c74cdfd5d80435e0f4b4cb",
    ("letters", "train-images"): "6288f418a917e007bf5fddb823a2dc7a5c6a35031401b93292a539cb12bd881f",
    ("letters", "train-labels"): "9759af91ea6bccdf07a6040fd085861f2ec88e37f7c3f5760f6feb57106fbe5c",
    ("mnist", "test-images"): "b25640fa9e356c618132f5df347c95ef5bae6d9c2596be1de40f7e0ae1c3eac6",
    ("mnist", "test-labels"): "bcc5385d38f083dba046f5f756e99b32f5ea7fad122c6243c71c2239873065ca",
    ("mnist", "train-images"): "5f9942f441031c0f1f2e4d162059fd6e19ea808b34c328b6d16cab0ed24c78f2",
    ("mnist", "train-labels"): "00c6d3c2342fdffb1711e0b5656cac4ce5862d2826399d383a9bac07d612e9f8",
}

_CIFAR_TAR = Remote(
    "cifar-10-binary.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
)
_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
# Per-channel pixel mean and standard deviation of the CIFAR-10 training set, on [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _idx_arrays(
    folders: tuple[Path, ...],
    stems: dict[str, str],
    *,
    verify: dict[str, str] | None,
    raw: dict[str, str] | None = None,
) -> dict[str, np.ndarray] | None:
    """The four IDX arrays if every file is in one of ``folders`` (``.gz`` or not).

    With ``verify`` (stem -> SHA-256 of the published ``.gz``), a file must match it, or,
    where ``raw`` (stem -> SHA-256 of the uncompressed IDX bytes) is known, hold those
    bytes: a recompressed copy (Debian's ``dataset-fashion-mnist``) or a gunzipped one
    (torchvision's ``raw/`` folders) is the same data. Uncompressed files without a known
    ``raw`` digest get the structural checks of :func:`read_idx` only."""
    for folder in folders:
        found = {}
        for key, stem in stems.items():
            path = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.exists()), None)
            if path is None:
                break
            found[key] = path
        else:
            if verify is not None:
                for key, path in found.items():
                    _check_idx(path, verify[stems[key]], (raw or {}).get(stems[key]))
            return {key: read_idx(path) for key, path in found.items()}
    return None


def _check_idx(path: Path, published: str, content: str | None) -> None:
    """Refuse ``path`` unless it is the published ``.gz`` or holds the published bytes."""
    if content is not None:
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
        if hashlib.sha256(data).hexdigest() == content:
            return
        if path.suffix != ".gz":
            raise DataError(
                f"{path} is corrupt or not the published file: the SHA-256 of its contents is "
                f"{hashlib.sha256(data).hexdigest()}, expected {content}. Delete it to download "
                "it again, or pass verify=False (data.verify: false) if you made it yourself."
            )
    if path.suffix == ".gz":
        check_sha256(path, published)


def _fetched(arrays: dict[str, np.ndarray] | None, folder: Path) -> dict[str, np.ndarray]:
    if arrays is None:  # the files were just fetched: something removed them meanwhile
        raise DataError(f"the files just placed in {folder} are gone; is another process using it?")
    return arrays


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32) / 255.0).unsqueeze(1)


def _check_labels(labels: np.ndarray, num_classes: int, what: str, folder: Path) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what} labels in {folder} lie in [{labels.min()}, {labels.max()}], expected "
            f"0..{num_classes - 1}: the label files are not {what}'s"
        )


def _idx_dataset(
    name: str, arrays: dict[str, np.ndarray], num_classes: int, folder: Path, *, standardize: bool
) -> Dataset:
    """The dataset of four IDX arrays; ``standardize`` scales by the training set's pixel
    mean and std (computed, one scalar pair, as :func:`~fedloom.data.dataset.standardized`)."""
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DataError(
                f"{name} in {folder}: {len(arrays[f'{split}_images'])} {split} images but "
                f"{len(arrays[f'{split}_labels'])} labels; one of the files is not its pair"
            )
        _check_labels(arrays[f"{split}_labels"], num_classes, name, folder)
    dataset = Dataset(
        name=name,
        train_x=_images(arrays["train_images"]),
        train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_x=_images(arrays["test_images"]),
        test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=num_classes,
    )
    return standardized(dataset) if standardize else dataset


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    download: bool = True,
    standardize: bool = True,
    verify: bool = True,
) -> Dataset:
    """FashionMNIST (Xiao et al. 2017): 60,000 + 10,000 28x28 grey images of 10 garments.

    Read from ``<root>/fashion_mnist/`` (or a torchvision download in
    ``<root>/FashionMNIST/raw/``): the four IDX files, named as MNIST's. Images are
    ``[N, 1, 28, 28]`` float32, standardized by the training set's mean and std unless
    ``standardize=False`` (raw pixels in [0, 1]). ``verify`` checks each ``.gz`` against
    its published SHA-256.
    """
    folder = data_folder(root, "fashion_mnist")
    digests = _FASHION_SHA256 if verify else None
    torchvision_raw = folder.parent / "FashionMNIST" / "raw"
    arrays = _idx_arrays(
        (folder, torchvision_raw), MNIST_FILES, verify=digests, raw=_FASHION_RAW_SHA256
    )
    if arrays is None:
        names = [f"{stem}.gz" for stem in MNIST_FILES.values()]
        for stem in MNIST_FILES.values():
            remote = Remote(f"{stem}.gz", (_FASHION_URL + f"{stem}.gz",), _FASHION_SHA256[stem])
            fetch(folder, remote, what="FashionMNIST", download=download, verify=verify,
                  siblings=names)  # fmt: skip
        arrays = _fetched(_idx_arrays((folder,), MNIST_FILES, verify=digests), folder)
    return _idx_dataset("fashion_mnist", arrays, 10, folder, standardize=standardize)


def load_emnist(
    root: str | Path | None = None,
    split: str = "balanced",
    *,
    download: bool = True,
    standardize: bool = True,
    verify: bool = True,
) -> Dataset:
    """EMNIST (Cohen et al. 2017), one of its splits: ``balanced`` (47 classes, 112,800 +
    18,800), ``byclass`` (62), ``bymerge`` (47), ``digits`` (10), ``letters`` (26) or
    ``mnist`` (10).

    Read from ``<root>/emnist/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``
    (``.gz`` or not; a torchvision download in ``<root>/EMNIST/raw/`` is found too). When
    they are missing, NIST's ``gzip.zip`` (about 560 MB) is downloaded into the folder and
    the split's four members are taken out of it, each checked against its SHA-256. The
    files store images transposed; they come back upright, ``[N, 1, 28, 28]``.
    """
    if split not in EMNIST_CLASSES:
        raise DataError(f"unknown EMNIST split {split!r}; splits: {', '.join(EMNIST_CLASSES)}")
    folder = data_folder(root, "emnist")
    stems = {
        f"{part}_{kind}": f"emnist-{split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for part in ("train", "test")
        for kind in ("images", "labels")
    }
    digests = {stems[f"{p}_{k}"]: _EMNIST_SHA256[(split, f"{p}-{k}")] for p in ("train", "test")
               for k in ("images", "labels")}  # fmt: skip
    verify_with = digests if verify else None
    arrays = _idx_arrays((folder, folder.parent / "EMNIST" / "raw"), stems, verify=verify_with)
    if arrays is None:
        _emnist_from_zip(folder, stems, digests, download=download, verify=verify)
        arrays = _fetched(_idx_arrays((folder,), stems, verify=verify_with), folder)
    for part in ("train", "test"):
        arrays[f"{part}_images"] = arrays[f"{part}_images"].transpose(0, 2, 1)
        if split == "letters":  # stored 1..26
            arrays[f"{part}_labels"] = arrays[f"{part}_labels"].astype(np.int64) - 1
    return _idx_dataset(
        f"emnist_{split}", arrays, EMNIST_CLASSES[split], folder, standardize=standardize
    )


def _emnist_from_zip(
    folder: Path, stems: dict[str, str], digests: dict[str, str], *, download: bool, verify: bool
) -> None:
    """Take the split's four ``.gz`` members out of ``gzip.zip`` (downloaded if missing)."""
    names = [f"{stem}.gz" for stem in stems.values()]
    archive = folder / _EMNIST_ZIP.name
    if not archive.exists():
        if not download:
            raise DataMissing(
                f"EMNIST files {', '.join(names)} not found in {folder}. Put them there, or "
                f"NIST's gzip.zip ({_EMNIST_ZIP.urls[0]}), or allow downloading."
            )
        fetch(folder, _EMNIST_ZIP,
              what="EMNIST", download=True, verify=False, siblings=names,
              hint=" (or NIST's gzip.zip)")  # fmt: skip
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in names:
                data = zf.read(f"gzip/{name}")  # checks the member's CRC-32
                (folder / f"{name}.part").write_bytes(data)
                (folder / f"{name}.part").rename(folder / name)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise DataError(
            f"{archive} is not NIST's EMNIST gzip.zip or is damaged ({type(exc).__name__}: "
            f"{exc}); delete it to download it again"
        ) from None
    if verify:
        for name in names:
            check_sha256(folder / name, digests[name.removesuffix(".gz")])


def read_cifar_binary(data: bytes, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` from one CIFAR-10 binary batch.

    Each record is 1 label byte (0..9) then 3,072 pixel bytes: the red, green and blue
    32x32 planes, rows in order. A length that is not a whole number of records, or a label
    byte over 9, is refused with an error naming ``path``."""
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DataError(
            f"{path} is truncated or not a CIFAR-10 binary batch: {len(data)} bytes is not a "
            f"whole number of {_CIFAR_RECORD}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if len(bad):
        raise DataError(
            f"{path} is corrupt or not a CIFAR-10 binary batch: record {int(bad[0])} has label "
            f"byte {int(labels[bad[0]])} (labels are 0..9)"
        )
    return records[:, 1:].reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_batches(folder: Path, *, download: bool, verify: bool) -> dict[str, tuple]:
    """Every batch file name -> its (images, labels), from the extracted folder or the tar."""
    names = (*_CIFAR_TRAIN, _CIFAR_TEST)
    extracted = folder / _CIFAR_DIR
    if all((extracted / name).exists() for name in names):
        out = {}
        for name in names:
            try:
                data = (extracted / name).read_bytes()
            except OSError as exc:
                raise DataError(f"{extracted / name} cannot be read ({exc})") from None
            out[name] = read_cifar_binary(data, extracted / name)
        return out
    archive = fetch(
        folder, _CIFAR_TAR, what="CIFAR-10", download=download, verify=verify,
        hint=f" (or its extracted {_CIFAR_DIR}/ folder: {', '.join(names)})",
    )  # fmt: skip
    out = {}
    try:  # read the members in place: nothing is extracted, so no path in the tar is trusted
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                member = tar.extractfile(f"{_CIFAR_DIR}/{name}")
                if member is None:
                    raise KeyError(name)
                out[name] = read_cifar_binary(member.read(), f"{archive}:{_CIFAR_DIR}/{name}")
    except (
        tarfile.TarError,
        KeyError,
        OSError,
        EOFError,
        gzip.BadGzipFile,
        io.UnsupportedOperation,
    ) as exc:
        raise DataError(
            f"{archive} is truncated or not the CIFAR-10 binary archive ({type(exc).__name__}: "
            f"{exc}); delete it to download it again"
        ) from None
    return out


def load_cifar10(
    root: str | Path | None = None,
    *,
    download: bool = True,
    standardize: bool = True,
    verify: bool = True,
) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 32x32 colour images of 10 classes.

    Read from ``<root>/cifar10/``: the extracted ``cifar-10-batches-bin/`` folder, or the
    ``cifar-10-binary.tar.gz`` archive itself (downloaded when missing and online; checked
    against its SHA-256 unless ``verify=False``). Images are ``[N, 3, 32, 32]`` float32,
    standardized per channel by the training set's mean and std unless ``standardize=False``.
    """
    folder = data_folder(root, "cifar10")
    batches = _cifar_batches(folder, download=download, verify=verify)
    train_x = np.concatenate([batches[name][0] for name in _CIFAR_TRAIN])
    train_y = np.concatenate([batches[name][1] for name in _CIFAR_TRAIN])
    test_x, test_y = batches[_CIFAR_TEST]
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
        return (x - mean) / std if standardize else x

    return Dataset(
        name="cifar10",
        train_x=images(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=images(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=10,
    )
