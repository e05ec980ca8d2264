"""LEAF's FEMNIST and Shakespeare (Caldas et al. 2018, "LEAF: A Benchmark for Federated
Settings"), read from LEAF's JSON files, with their natural clients.

LEAF's scripts (``data/femnist/preprocess.sh``, ``data/shakespeare/preprocess.sh`` in
github.com/TalwalkarLab/leaf) build the data from NIST's and Project Gutenberg's raw files
and write ``data/train/*.json`` and ``data/test/*.json``, each::

    {"users": ["f0000_14", ...], "num_samples": [154, ...],
     "user_data": {"f0000_14": {"x": [...], "y": [...]}, ...}}

No preprocessed copy is published for download, so these loaders read a folder you made
(``<root>/femnist/`` or ``<root>/shakespeare/`` holding ``train/`` and ``test/``, or LEAF's
own ``data/train``, ``data/test``) and, when it is missing, say how to make it.

- FEMNIST: a user is a writer (one client each); ``x`` is a 28x28 image as 784 floats in
  [0, 1], ``y`` one of 62 classes (digits, upper- and lower-case letters).
- Shakespeare: a user is a speaking role of a play (one client each); ``x`` is 80
  characters of its lines, ``y`` the character that follows (next-character prediction,
  the task of McMahan et al. 2017 as LEAF frames it: a classification over LEAF's 80
  letters, :data:`SHAKESPEARE_LETTERS`).

Users' train splits become the clients' data (``Dataset.train_owner``, the natural
partition); their test splits, pooled, the global test set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.data.files import data_folder
from fedloom.errors import DataError, DataMissing

__all__ = ["SHAKESPEARE_LETTERS", "load_femnist", "load_shakespeare", "read_leaf_json"]

SHAKESPEARE_LETTERS = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
"""LEAF's 80 letters (``models/utils/language_utils.py``): a character's index is its class."""
_LETTER_INDEX = {c: i for i, c in enumerate(SHAKESPEARE_LETTERS)}
FEMNIST_CLASSES = 62


def read_leaf_json(path: Path) -> list[tuple[str, list[Any], list[Any]]]:
    """``(user, x, y)`` for every user of one LEAF JSON file, in the file's order.

    The file must hold ``users``, ``num_samples`` and ``user_data`` that agree: every user
    has ``x`` and ``y`` of ``num_samples`` entries. Anything else (bad JSON, a truncated
    file, a missing user, a count that differs) is refused with an error naming the file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not a readable LEAF JSON file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(document, dict) or not {"users", "user_data"} <= set(document):
        raise DataError(f"{path} is not a LEAF JSON file: it needs 'users' and 'user_data' keys")
    users, user_data = document["users"], document["user_data"]
    counts = document.get("num_samples", [None] * len(users))
    if not isinstance(users, list) or not isinstance(user_data, dict) or len(counts) != len(users):
        raise DataError(f"{path}: 'users' and 'num_samples' must be lists of the same length")
    out = []
    for user, count in zip(users, counts, strict=True):
        entry = user_data.get(user)
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("x"), list)
            or not isinstance(entry.get("y"), list)
        ):
            raise DataError(f"{path}: user {user!r} has no 'x' and 'y' lists in 'user_data'")
        x, y = entry["x"], entry["y"]
        if len(x) != len(y) or (count is not None and count != len(y)):
            raise DataError(
                f"{path}: user {user!r} has {len(x)} inputs, {len(y)} targets and num_samples "
                f"{count}; they must agree (is the file truncated or edited?)"
            )
        out.append((str(user), x, y))
    return out


def _leaf_folder(root: str | Path | None, name: str, split: str) -> Path:
    folder = data_folder(root, name)
    for candidate in (folder / split, folder / "data" / split):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise DataMissing(
        f"LEAF {name} {split} files (*.json) not found in {folder / split} (nor in "
        f"{folder / 'data' / split}). LEAF publishes no preprocessed copy: run its "
        f"data/{name}/preprocess.sh (github.com/TalwalkarLab/leaf, e.g. `./preprocess.sh -s "
        f"niid --sf 0.05 -k 0 -t sample`) and copy data/train and data/test into {folder}, "
        "or load a copy from the Hugging Face hub with data.dataset: hf and its client column."
    )


def _read_split(
    root: str | Path | None, name: str, split: str, convert
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Users, and their converted inputs and targets, over the split's files (sorted)."""
    users, xs, ys = [], [], []
    for path in sorted(_leaf_folder(root, name, split).glob("*.json")):
        for user, x, y in read_leaf_json(path):
            if not y:
                continue
            try:
                cx, cy = convert(x, y)
            except (ValueError, TypeError, KeyError) as exc:
                raise DataError(f"{path}: user {user!r}: {exc}") from None
            users.append(user)
            xs.append(cx)
            ys.append(cy)
    if not users:
        raise DataError(f"LEAF {name} {split} files hold no examples")
    return users, xs, ys


def _leaf_dataset(name: str, root, convert, num_classes: int) -> Dataset:
    train_users, train_x, train_y = _read_split(root, name, "train", convert)
    _, test_x, test_y = _read_split(root, name, "test", convert)
    owner_ids = {user: k for k, user in enumerate(dict.fromkeys(train_users))}
    owners = np.concatenate(
        [
            np.full(len(y), owner_ids[u], dtype=np.int64)
            for u, y in zip(train_users, train_y, strict=True)
        ]
    )
    shapes = sorted({x.shape[1:] for x in train_x + test_x})
    if len(shapes) > 1:
        raise DataError(
            f"LEAF {name} files under {data_folder(root, name)} mix input shapes {shapes}; every "
            "user's inputs must have one shape (Shakespeare: one sequence length)"
        )
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.concatenate(train_x)),
        train_y=torch.from_numpy(np.concatenate(train_y)),
        test_x=torch.from_numpy(np.concatenate(test_x)),
        test_y=torch.from_numpy(np.concatenate(test_y)),
        num_classes=num_classes,
        train_owner=owners,
    )


def _femnist(x: list[Any], y: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    sizes = sorted({len(row) if isinstance(row, list) else -1 for row in x})
    if sizes != [784]:
        raise ValueError(f"FEMNIST images must be lists of 784 pixels each, got lengths {sizes}")
    images = np.asarray(x, dtype=np.float32)
    labels = np.asarray(y, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= FEMNIST_CLASSES:
        raise ValueError(f"FEMNIST labels must be 0..61, got {labels.min()}..{labels.max()}")
    return images.reshape(-1, 1, 28, 28), labels


def _shakespeare(x: list[Any], y: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    lengths = {len(s) if isinstance(s, str) else -1 for s in x}
    if len(lengths) != 1 or -1 in lengths or not all(isinstance(c, str) and len(c) == 1 for c in y):
        raise ValueError(
            "Shakespeare inputs must be strings of one length, targets single characters"
        )
    try:
        tokens = np.array([[_LETTER_INDEX[c] for c in s] for s in x], dtype=np.int64)
        targets = np.array([_LETTER_INDEX[c] for c in y], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not one of LEAF's 80 letters") from None
    return tokens, targets


def load_femnist(root: str | Path | None = None) -> Dataset:
    """LEAF FEMNIST: images ``[N, 1, 28, 28]`` in [0, 1] as LEAF wrote them, 62 classes,
    one client per writer (``train_owner``); read from ``<root>/femnist/{train,test}``."""
    return _leaf_dataset("femnist", root, _femnist, FEMNIST_CLASSES)


def load_shakespeare(root: str | Path | None = None) -> Dataset:
    """LEAF Shakespeare: inputs are character indices ``[N, 80]`` (int64), targets the index
    of the next character, 80 classes (:data:`SHAKESPEARE_LETTERS`); one client per speaking
    role (``train_owner``); read from ``<root>/shakespeare/{train,test}``."""
    return _leaf_dataset("shakespeare", root, _shakespeare, len(SHAKESPEARE_LETTERS))
