"""Hugging Face ``datasets`` as fedloom data sets, and Flower's partitioners as fedloom's.

Any data set ``datasets`` can open (local parquet, CSV, JSON or arrow files, a folder saved
with ``save_to_disk``, or the hub when online) becomes a :class:`~fedloom.data.Dataset`:

- a *client column* (a writer, a hospital, a device) gives the natural partition
  (``train_owner``; ``data.partition: natural``);
- without one, any fedloom partitioner splits it (``iid``, ``dirichlet`` ...), or any
  ``flwr-datasets`` partitioner through :class:`FlowerPartitioner`, so that a Flower
  user's partition carries over to fedloom example for example.

Both packages are optional: ``pip install 'fedloom[hf]'``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.data.dataset import Dataset
from fedloom.errors import DataError, DataMissing

__all__ = ["FlowerPartitioner", "flower_partitioner", "from_hf", "load_hf"]

_SPLIT_SEED = 20170217  # a fixed test split (not the run's seed), as for digits
_ROW = "__fedloom_row__"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = "datasets" if module == "datasets" else "flwr-datasets"
        raise DataError(f"this needs the {package} package: pip install 'fedloom[hf]'") from None


def load_hf(
    path: str,
    *,
    name: str | None = None,
    data_files: str | Sequence[str] | dict[str, Any] | None = None,
    split: str = "train",
    test_split: str | None = None,
    test_fraction: float = 0.2,
    input_columns: Sequence[str] | None = None,
    label_column: str = "label",
    client_column: str | None = None,
) -> Dataset:
    """Open a data set with ``datasets`` and convert it with :func:`from_hf`.

    ``path`` is a hub id (``"flwrlabs/femnist"``), a builder with ``data_files``
    (``"parquet"``, ``"csv"``, ``"json"``, ``"arrow"``), or a folder written by
    ``save_to_disk``. ``split`` is the training split; ``test_split`` the global test set,
    or ``None`` to hold out ``test_fraction`` of ``split`` (a fixed stratified draw).
    """
    datasets = _require("datasets")
    folder = Path(path).expanduser()
    try:
        if folder.is_dir() and (folder / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(folder))
            train, test = loaded[split], loaded[test_split] if test_split else None
        elif folder.is_dir() and (folder / "state.json").exists():
            train, test = datasets.load_from_disk(str(folder)), None
        else:
            train = datasets.load_dataset(path, name, data_files=data_files, split=split)
            test = (
                datasets.load_dataset(path, name, data_files=data_files, split=test_split)
                if test_split
                else None
            )
    except (FileNotFoundError, ConnectionError) as exc:  # not on disk, hub unreachable
        raise DataMissing(f"Hugging Face data set {path!r} cannot be found: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"Hugging Face data set {path!r} cannot be opened: {exc}") from None
    return from_hf(
        train,
        test,
        name=Path(path).name or path,
        test_fraction=test_fraction,
        input_columns=input_columns,
        label_column=label_column,
        client_column=client_column,
    )


def from_hf(
    train: Any,
    test: Any | None = None,
    *,
    name: str = "hf",
    test_fraction: float = 0.2,
    input_columns: Sequence[str] | None = None,
    label_column: str = "label",
    client_column: str | None = None,
) -> Dataset:
    """A fedloom :class:`Dataset` from ``datasets.Dataset`` splits.

    Inputs are ``input_columns`` (default: every column but the label and the client): one
    column of arrays or images gives its arrays (images ``[N, C, H, W]`` in [0, 1]); several
    numeric columns are stacked into ``[N, F]`` float32. Labels are integers (a
    ``ClassLabel`` keeps its number of classes) or strings (numbered in sorted order). The
    ``client_column`` values, numbered in order of appearance, become ``train_owner``.

    >>> import datasets
    >>> rows = datasets.Dataset.from_dict({"a": [0.0, 1, 2, 3], "b": [1.0, 1, 0, 0],
    ...                                    "label": [0, 1, 0, 1], "site": ["x", "x", "y", "z"]})
    >>> data = from_hf(rows, rows, client_column="site")
    >>> data.train_x.shape, data.train_owner.tolist()
    (torch.Size([4, 2]), [0, 0, 1, 2])
    """
    _require("datasets")
    for column in (label_column, client_column):
        if column is not None and column not in train.column_names:
            raise DataError(
                f"{name}: no column {column!r}; its columns are {', '.join(train.column_names)}"
            )
    if test is None:
        train, test = _hold_out(train, label_column, test_fraction)
    columns = list(
        input_columns or [c for c in train.column_names if c not in (label_column, client_column)]
    )
    classes = _label_classes(train, test, label_column)
    owners = None
    if client_column is not None:
        values = train[client_column]
        ids = {v: k for k, v in enumerate(dict.fromkeys(values))}
        owners = np.array([ids[v] for v in values], dtype=np.int64)
    return Dataset(
        name=name,
        train_x=_inputs(train, columns, name),
        train_y=_labels(train, label_column, classes),
        test_x=_inputs(test, columns, name),
        test_y=_labels(test, label_column, classes),
        num_classes=len(classes) if isinstance(classes, list) else classes,
        train_owner=owners,
    )


def _hold_out(rows: Any, label_column: str, fraction: float) -> tuple[Any, Any]:
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1) without a test split, got {fraction}")
    labels = np.asarray(rows[label_column])
    rng = np.random.default_rng(_SPLIT_SEED)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == v))[: round(fraction * np.sum(labels == v))]
         for v in np.unique(labels)]
    )  # fmt: skip
    mask = np.zeros(len(labels), dtype=bool)
    mask[test] = True
    return rows.select(np.flatnonzero(~mask)), rows.select(np.flatnonzero(mask))


def _label_classes(train: Any, test: Any, column: str) -> int | list[Any]:
    """The number of classes, or the sorted label values when they are not integers."""
    feature = train.features[column]
    if hasattr(feature, "num_classes"):  # a ClassLabel
        return int(feature.num_classes)
    values = list(train[column]) + list(test[column])
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DataError(f"labels in column {column!r} must be >= 0, got {min(values)}")
        return int(max(values)) + 1
    return sorted(set(values))


def _labels(rows: Any, column: str, classes: int | list[Any]) -> torch.Tensor:
    values = rows[column]
    if isinstance(classes, list):
        index = {v: k for k, v in enumerate(classes)}
        values = [index[v] for v in values]
    return torch.tensor(np.asarray(values, dtype=np.int64))


def _inputs(rows: Any, columns: list[str], name: str) -> torch.Tensor:
    if not columns:
        raise DataError(f"{name}: no input columns (give input_columns)")
    formatted = rows.with_format("numpy")
    if len(columns) == 1:
        column = columns[0]
        array = np.asarray(formatted[column])
        if array.dtype == object or array.dtype.kind in "USO":
            raise DataError(
                f"{name}: column {column!r} holds {array.dtype} values of uneven shapes or "
                "text; turn them into numbers (tokenize, resize) with datasets' map first"
            )
        if array.ndim == 1:  # one number per row: one feature
            array = array[:, None]
        if type(rows.features[column]).__name__ == "Image":
            array = array.astype(np.float32) / 255.0
            array = array[:, None] if array.ndim == 3 else np.moveaxis(array, -1, 1)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(
            len(rows), *array.shape[1:]
        )
    parts = []
    for column in columns:
        array = np.asarray(formatted[column])
        if array.ndim != 1 or array.dtype.kind not in "biuf":
            raise DataError(
                f"{name}: column {column!r} is not a numeric scalar column; several input "
                "columns are stacked as features, so each must hold one number per row"
            )
        parts.append(array.astype(np.float32))
    return torch.from_numpy(np.stack(parts, axis=1))


@dataclass(frozen=True)
class FlowerPartitioner:
    """A ``flwr-datasets`` partitioner used as a fedloom partitioner.

    The Flower partitioner (not yet given a data set) is copied and given a Hugging Face view
    of the training labels (column ``label_column``) and row numbers; partition ``k``'s rows
    become client ``k``'s examples. The split is the one Flower computes with its own
    ``seed``: fedloom's partition seed does not enter, so the same Flower settings give the
    same clients in both frameworks.

    >>> from flwr_datasets.partitioner import IidPartitioner
    >>> from fedloom.data import Dataset, federate
    >>> y = torch.arange(10) % 2
    >>> data = Dataset("toy", torch.zeros(10, 1), y, torch.zeros(1, 1), y[:1], num_classes=2)
    >>> federate(data, FlowerPartitioner(IidPartitioner(5)), holdout_fraction=0).client_sizes
    array([2, 2, 2, 2, 2])
    """

    partitioner: Any
    label_column: str = "label"

    def __call__(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        datasets = _require("datasets")
        _require("flwr_datasets")
        table = datasets.Dataset.from_dict(
            {self.label_column: dataset.train_y.numpy(), _ROW: np.arange(dataset.num_train)}
        )
        partitioner = copy.deepcopy(self.partitioner)
        try:
            partitioner.dataset = table
            return [
                np.asarray(partitioner.load_partition(k)[_ROW], dtype=np.int64)
                for k in range(partitioner.num_partitions)
            ]
        except (ValueError, KeyError) as exc:
            raise DataError(f"{type(self.partitioner).__name__}: {exc}") from None


def flower_partitioner(
    num_clients: int, partitioner: str, options: Mapping[str, Any] | None = None
) -> FlowerPartitioner:
    """``flwr_datasets.partitioner.<partitioner>(num_partitions=num_clients, **options)`` as a
    fedloom partitioner: the ``flower`` partition of a config, e.g. ``{kind: flower,
    partitioner: DirichletPartitioner, options: {partition_by: label, alpha: 0.3, seed: 7}}``.
    """
    module = _require("flwr_datasets.partitioner")
    names = sorted(n for n in dir(module) if n.endswith("Partitioner") and n != "Partitioner")
    if partitioner not in names:
        raise DataError(
            f"unknown flwr-datasets partitioner {partitioner!r}; available: {', '.join(names)}"
        )
    try:
        value = getattr(module, partitioner)(num_partitions=num_clients, **dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{partitioner}({dict(options or {})}): {exc}") from None
    return FlowerPartitioner(value, label_column=str((options or {}).get("partition_by", "label")))
