"""UCI Adult ("Census Income", Kohavi 1996): income above $50K from 14 census attributes, the
usual benchmark of fairness papers (Zhang et al. 2018 use it with ``sex`` as the sensitive
attribute).

The loader reads ``<root>/adult/adult.data`` (32,561 training rows) and ``adult.test``
(16,281 test rows) in the UCI's own CSV format: no header, 15 comma-separated fields,
``?`` for a missing value, and in ``adult.test`` a first line starting with ``|`` and labels
ending in a period (``>50K.``). When they are missing it downloads them if the machine is
online, checks each download against its SHA-256 before keeping it (a partial or altered
file never enters the cache), and otherwise fails with a message that names the files and
where to put them. Files already in the folder are parsed (every row must have 15 fields),
not checksummed, so a copy of your own (or a small file a test writes) works.

Encoding, in this order: the six numeric columns (``NUMERIC``) standardized by the training
rows' mean and standard deviation, then the categorical ones (``CATEGORICAL``) one-hot over
the categories the training rows hold (``?`` is a category; an unseen test category is all
zeros). The label is ``income == ">50K"``.
The sensitive attribute is any categorical column chosen by name (``sex``, ``race`` ...):
its group ids (the sorted categories of the training rows, e.g. ``Female`` = 0,
``Male`` = 1) travel with every batch as the extra entry ``"s"``; with ``drop_sensitive``
the column is left out of the features too (the adversary still sees it as ``"s"``). Rows
whose sensitive value is missing (``?``) are dropped.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.data.mnist import default_data_root
from fedloom.errors import DataError

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_FILES",
    "ADULT_SHA256",
    "CATEGORICAL",
    "NUMERIC",
    "load_adult",
    "read_adult_csv",
]

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
)  # fmt: skip
"""The 15 fields of a row, in order (``adult.names``)."""
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = tuple(c for c in ADULT_COLUMNS[:-1] if c not in NUMERIC)
ADULT_FILES = {"train": "adult.data", "test": "adult.test"}
ADULT_SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}
"""SHA-256 of the UCI files, as pinned by the Julia package PreprocessData.jl (DataDeps)."""
MIRRORS = ("https://archive.ics.uci.edu/ml/machine-learning-databases/adult/",)


def read_adult_csv(path: Path) -> list[list[str]]:
    """The rows of one Adult file as 15 stripped strings each (label without its period).

    Blank lines and the test file's ``|1x3 Cross validator`` line are skipped; any other row
    without 15 fields is a :class:`DataError` naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); delete it to download it "
            "again, or replace it with the original file"
        ) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("|"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(ADULT_COLUMNS):
            raise DataError(
                f"{path} line {number} has {len(fields)} fields, expected {len(ADULT_COLUMNS)} "
                f"({', '.join(ADULT_COLUMNS)}); is it the UCI Adult file?"
            )
        fields[-1] = fields[-1].rstrip(".")
        rows.append(fields)
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def _download(folder: Path, name: str, mirrors: Sequence[str], sha256: str | None) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Adult file {name} is not in {folder}, and that folder cannot be created to "
            f"download it ({exc.strerror or exc}). {_where_to_put(folder)}"
        ) from None
    target, partial = folder / name, folder / f"{name}.part"
    errors = []
    for mirror in mirrors:
        try:
            with (
                urllib.request.urlopen(mirror + name, timeout=30) as response,
                open(partial, "wb") as out,
            ):
                shutil.copyfileobj(response, out)
            digest = hashlib.sha256(partial.read_bytes()).hexdigest()
            if sha256 is not None and digest != sha256:
                raise DataError(f"checksum mismatch: SHA-256 {digest}, expected {sha256}")
            read_adult_csv(partial)  # parse before trusting it
            return partial.rename(target)
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{mirror}{name}: {exc}")
            partial.unlink(missing_ok=True)
    raise DataError(
        f"Adult file {name} is not in {folder} and could not be downloaded "
        f"({'; '.join(errors)}). {_where_to_put(folder)}"
    )


def _where_to_put(folder: Path) -> str:
    return (
        f"Put the two files {', '.join(ADULT_FILES.values())} (from {MIRRORS[0]}) in "
        f"{folder} (or point data.root / FEDLOOM_DATA at a folder whose adult/ subfolder "
        "holds them)."
    )


def _encode(
    train: list[list[str]], test: list[list[str]], columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Standardized numeric and one-hot categorical features of ``columns``."""
    train_parts, test_parts = [], []
    for column in columns:
        j = ADULT_COLUMNS.index(column)
        if column in NUMERIC:
            try:
                a = np.array([float(r[j]) for r in train])
                b = np.array([float(r[j]) for r in test])
            except ValueError as exc:
                raise DataError(f"Adult column {column} must be numeric ({exc})") from None
            std = a.std() or 1.0
            train_parts.append(((a - a.mean()) / std)[:, None])
            test_parts.append(((b - a.mean()) / std)[:, None])
        else:
            categories = sorted({r[j] for r in train})
            index = {c: i for i, c in enumerate(categories)}
            for rows, parts in ((train, train_parts), (test, test_parts)):
                hot = np.zeros((len(rows), len(categories)))
                for i, r in enumerate(rows):
                    if r[j] in index:
                        hot[i, index[r[j]]] = 1.0
                parts.append(hot)
    return np.concatenate(train_parts, 1), np.concatenate(test_parts, 1)


def load_adult(
    root: str | Path | None = None,
    *,
    sensitive: str = "sex",
    drop_sensitive: bool = False,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    checksums: Mapping[str, str | None] = ADULT_SHA256,
) -> Dataset:
    """UCI Adult as float32 features, int64 labels (1: income > $50K) and the sensitive
    attribute's group ids as the extra entry ``"s"`` (module docstring).

    Args:
        root: data root; the files are read from ``<root>/adult/`` (default
            :func:`fedloom.data.default_data_root`).
        sensitive: the categorical column whose categories are the groups.
        drop_sensitive: leave that column out of the features.
        download: fetch missing files when online.
        mirrors: base URLs to download from, in order.
        checksums: the SHA-256 each downloaded file must have (``None``: unchecked).
    """
    if sensitive not in CATEGORICAL:
        raise ValueError(
            f"sensitive: Adult has no categorical column {sensitive!r}; choose one of "
            f"{', '.join(CATEGORICAL)}"
        )
    folder = Path(root if root is not None else default_data_root()).expanduser() / "adult"
    rows = {}
    for split, name in ADULT_FILES.items():
        path = folder / name
        if not path.exists():
            if not download:
                raise DataError(
                    f"Adult file {name} not found in {folder}; put "
                    f"{' and '.join(ADULT_FILES.values())} there or allow downloading."
                )
            path = _download(folder, name, mirrors, checksums.get(name))
        rows[split] = read_adult_csv(path)
    j = ADULT_COLUMNS.index(sensitive)
    train = [r for r in rows["train"] if r[j] != "?"]
    test = [r for r in rows["test"] if r[j] != "?"]
    groups = sorted({r[j] for r in train})
    if len(groups) < 2:
        raise DataError(f"Adult column {sensitive} has one category only ({groups}) in {folder}")
    group_of = {g: i for i, g in enumerate(groups)}
    test = [r for r in test if r[j] in group_of]
    columns = [c for c in NUMERIC + CATEGORICAL if not (drop_sensitive and c == sensitive)]
    train_x, test_x = _encode(train, test, columns)

    def labels(part: list[list[str]]) -> torch.Tensor:
        return torch.tensor([r[-1] == ">50K" for r in part], dtype=torch.int64)

    def group_ids(part: list[list[str]]) -> torch.Tensor:
        return torch.tensor([group_of[r[j]] for r in part], dtype=torch.int64)

    return Dataset(
        name=f"adult(s={sensitive})",
        train_x=torch.from_numpy(train_x.astype(np.float32)),
        train_y=labels(train),
        test_x=torch.from_numpy(test_x.astype(np.float32)),
        test_y=labels(test),
        num_classes=2,
        train_extra={"s": group_ids(train)},
        test_extra={"s": group_ids(test)},
    )
