"""The ``data`` section: which dataset, how it is split across clients (registered
partitions), and building the federated dataset from it."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, SerializeAsAny, field_validator

from fedloom.config._dispatch import dispatch, registry_field
from fedloom.data import Dataset, FederatedDataset, federate
from fedloom.data.dataset import standardized
from fedloom.data.partitioners import (
    IID,
    Dirichlet,
    Natural,
    Partitioner,
    QuantitySkew,
    RareClass,
    Shards,
)
from fedloom.data.task_sequence import TaskSequence
from fedloom.errors import ConfigError, DataError, FedloomError
from fedloom.registry import REGISTRY, Kinded, Section

__all__ = [
    "AdultConfig",
    "DataConfig",
    "DirichletPartition",
    "EMNISTConfig",
    "FlowerPartition",
    "HFConfig",
    "FairSyntheticConfig",
    "IIDPartition",
    "NaturalPartition",
    "QuantityPartition",
    "RareClassPartition",
    "ScannersConfig",
    "ShardsPartition",
    "SyntheticConfig",
    "TaskSequenceConfig",
    "build_dataset",
    "build_federated_data",
    "build_partitioner",
]


class IIDPartition(Kinded):
    """Shuffle and split evenly."""

    kind: Literal["iid"] = "iid"


class ShardsPartition(Kinded):
    """McMahan et al.'s pathological non-IID: label-sorted shards, S per client."""

    kind: Literal["shards"] = "shards"
    shards_per_client: Annotated[int, Field(ge=1)] = 2


class DirichletPartition(Kinded):
    """Label skew: each client's label mix ~ Dir(alpha * p)."""

    kind: Literal["dirichlet"] = "dirichlet"
    alpha: Annotated[float, Field(gt=0)] = 0.5


class QuantityPartition(Kinded):
    """Log-normal client sizes with a minimum, IID labels."""

    kind: Literal["quantity"] = "quantity"
    sigma: Annotated[float, Field(ge=0)] = 1.0
    min_size: Annotated[int, Field(ge=1)] = 10


class RareClassPartition(Kinded):
    """One class rare overall (prevalence) and uneven across clients (Dir(alpha)); the rest IID."""

    kind: Literal["rare_class"] = "rare_class"
    rare_class: Annotated[int, Field(ge=0)] = Field(default=0, description="the rare label")
    prevalence: Annotated[float, Field(gt=0, le=0.5)] = Field(
        default=0.02, description="its share of the partitioned training data"
    )
    alpha: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="Dirichlet concentration of its spread over clients"
    )
    rest_alpha: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Dirichlet label skew of the other classes; null: IID"
    )


class NaturalPartition(Kinded):
    """One client per natural owner (e.g. a Synthetic device)."""

    kind: Literal["natural"] = "natural"


class FlowerPartition(Kinded):
    """A flwr-datasets partitioner, so a Flower user's partition carries over (fedloom[hf])."""

    kind: Literal["flower"] = "flower"
    partitioner: str = Field(
        description="a class of flwr_datasets.partitioner, e.g. DirichletPartitioner"
    )
    options: dict[str, Any] = Field(
        default={},
        description="its keyword arguments but num_partitions (data.num_clients), e.g. "
        "{partition_by: label, alpha: 0.5, seed: 42}",
    )


def _flower(num_clients: int, partitioner: str, options: dict[str, Any]) -> Partitioner:
    from fedloom.data.hf import flower_partitioner

    return flower_partitioner(num_clients, partitioner, options)


for _name, _factory, _section in (
    ("iid", IID, IIDPartition),
    ("shards", Shards, ShardsPartition),
    ("dirichlet", Dirichlet, DirichletPartition),
    ("quantity", QuantitySkew, QuantityPartition),
    ("natural", Natural, NaturalPartition),
    ("rare_class", RareClass, RareClassPartition),
    ("flower", _flower, FlowerPartition),
):
    REGISTRY.register("partition", _name, _factory, section=_section)


class SyntheticConfig(Section):
    alpha: Annotated[float, Field(ge=0)] = 1.0
    beta: Annotated[float, Field(ge=0)] = 1.0
    num_devices: Annotated[int, Field(ge=1)] = 30
    iid: bool = False


class EMNISTConfig(Section):
    """Which EMNIST split (Cohen et al. 2017) ``dataset: emnist`` reads."""

    split: Literal["balanced", "byclass", "bymerge", "digits", "letters", "mnist"] = "balanced"


class HFConfig(Section):
    """A Hugging Face data set (``dataset: hf``; needs ``pip install 'fedloom[hf]'``)."""

    path: str = Field(
        description="a hub id, a builder (parquet, csv, json, arrow) with data_files, or a "
        "folder written by save_to_disk; relative paths are read from the working directory"
    )
    name: str | None = Field(default=None, description="the data set's configuration name")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        default=None, description="files for a builder path, or a split -> files mapping"
    )
    split: str = "train"
    test_split: str | None = Field(
        default=None, description="the global test set; null: hold out test_fraction of split"
    )
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    input_columns: list[str] | None = Field(
        default=None, description="model inputs; null: every column but the label and client"
    )
    label_column: str = "label"
    client_column: str | None = Field(
        default=None, description="the column naming each row's client (partition: natural)"
    )


ScannerKind = Literal["brightness", "contrast", "gamma", "blur", "noise"]


def _all_scanner_kinds() -> list[ScannerKind]:
    return ["brightness", "contrast", "gamma", "blur", "noise"]


class ScannersConfig(Section):
    """Feature skew: each client sees its inputs through its own "scanner" (a fixed input
    transform drawn from the seed, :mod:`fedloom.data.scanners`), on top of the partition.
    The global test set stays clean; per-client held-out accuracy carries the scanners."""

    kinds: Annotated[list[ScannerKind], Field(min_length=1)] = Field(
        default_factory=_all_scanner_kinds,
        description="transforms dealt to clients in turn (client k: kinds[k % len])",
    )
    strength: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.5, description="how strong each client's transform is, in (0, 1]"
    )


class FairSyntheticConfig(Section):
    """The fairness generator (:mod:`fedloom.data.fair_synthetic`): groups s in {0, 1} whose
    share differs from client to client (0.1 .. 0.9), a label that depends on the group by
    label_bias, proxies that leak the group; the natural partition gives one client each."""

    num_clients: Annotated[int, Field(ge=1)] = 10
    examples_per_client: Annotated[int, Field(ge=1)] = 400
    label_bias: Annotated[float, Field(ge=0)] = 0.4
    noise: Annotated[float, Field(ge=0)] = 0.5
    num_features: Annotated[int, Field(ge=1)] = 6
    num_proxies: Annotated[int, Field(ge=0)] = 2
    proxy_strength: Annotated[float, Field(ge=0)] = 2.0
    test_size: Annotated[int, Field(ge=2)] = 2000


class AdultConfig(Section):
    """UCI Adult (:mod:`fedloom.data.adult`): downloaded to <root>/adult/ when online."""

    sensitive: str = Field(
        default="sex", description="the categorical column whose categories are the groups (s)"
    )
    drop_sensitive: bool = Field(
        default=False, description="leave the sensitive column out of the features"
    )


class TaskSequenceConfig(Section):
    """Lifelong learning: the clients' data arrives as a sequence of tasks, each a set of
    labels (``[[0, 1], [2, 3], ...]``: split MNIST's digit pairs); round ``t`` trains every
    client on its rows of the current task (:mod:`fedloom.data.task_sequence`). With
    ``algorithm: lifelong`` each client estimates its EWC Fisher when a task ends."""

    tasks: Annotated[list[list[int]], Field(min_length=1)] = Field(
        description="the labels of each task, in order"
    )
    rounds_per_task: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="every task lasts this many rounds (or give starts)"
    )
    starts: list[int] | None = Field(
        default=None, description="the 0-based round each task begins at: 0, then increasing"
    )

    def build(self) -> TaskSequence:
        """The :class:`~fedloom.data.task_sequence.TaskSequence` (its errors name the field)."""
        return TaskSequence(
            tuple(tuple(t) for t in self.tasks),
            rounds_per_task=self.rounds_per_task,
            starts=tuple(self.starts) if self.starts is not None else None,
        )


class DataConfig(Section):
    dataset: Literal[
        "digits",
        "mnist",
        "synthetic",
        "fashion_mnist",
        "emnist",
        "cifar10",
        "femnist",
        "shakespeare",
        "hf",
        "fair_synthetic",
        "adult",
    ] = "digits"
    root: str | None = Field(
        default=None, description="data root; default $FEDLOOM_DATA or ~/.cache/fedloom"
    )
    num_clients: Annotated[int, Field(ge=1)] | None = Field(
        default=20, description="K; leave empty with the natural partition"
    )
    partition: SerializeAsAny[Kinded] = registry_field(
        "partition", DirichletPartition(), "how the data is split (a registered partition)"
    )
    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    normalize: Literal["auto", "standardize", "none"] = Field(
        default="auto",
        description="inputs: standardize (train mean and std), none (raw: pixels in [0, 1]), "
        "or auto (the dataset's own: mnist, fashion_mnist, emnist and cifar10 standardized; "
        "digits, synthetic, femnist and hf raw; shakespeare is characters, never scaled)",
    )
    synthetic: SyntheticConfig = SyntheticConfig()
    emnist: EMNISTConfig = EMNISTConfig()
    hf: HFConfig | None = Field(default=None, description="with dataset: hf, which data set")
    verify: bool = Field(
        default=True,
        description="check published data files (fashion_mnist, emnist, cifar10) against "
        "their SHA-256; false for files you made yourself",
    )
    scanners: ScannersConfig | None = Field(
        default=None, description="per-client input transforms (feature skew); null: none"
    )
    fair_synthetic: FairSyntheticConfig | None = Field(
        default=None, description="options of dataset fair_synthetic; null: its defaults"
    )
    adult: AdultConfig | None = Field(
        default=None, description="options of dataset adult; null: its defaults"
    )
    task_sequence: TaskSequenceConfig | None = Field(
        default=None, description="the data arrives as a sequence of tasks (lifelong); null: none"
    )

    @field_validator("partition", mode="before")
    @classmethod
    def _partition(cls, value: Any) -> Any:
        return dispatch("partition", value, default="dirichlet")


def build_dataset(config: DataConfig, *, seed: int = 0) -> Dataset:
    """Load the configured dataset, its inputs scaled as ``normalize`` says."""
    from fedloom.data import load_digits, load_synthetic

    if config.dataset == "mnist":  # stored standardized; "none" reads the raw pixels
        return _load_mnist(config.root, standardize=config.normalize != "none")
    if config.dataset in _FILE_DATASETS:
        return _load_files(config)
    if config.dataset == "adult":
        return _load_adult(config)
    if config.dataset == "digits":
        dataset = load_digits()
    elif config.dataset == "fair_synthetic":
        from fedloom.data.fair_synthetic import load_fair_synthetic

        options = (config.fair_synthetic or FairSyntheticConfig()).model_dump()
        dataset = load_fair_synthetic(**options, seed=seed)
    else:
        synthetic = config.synthetic
        dataset = load_synthetic(
            synthetic.alpha,
            synthetic.beta,
            num_devices=synthetic.num_devices,
            iid=synthetic.iid,
            seed=seed,
        )
    return standardized(dataset) if config.normalize == "standardize" else dataset


_FILE_DATASETS = ("fashion_mnist", "emnist", "cifar10", "femnist", "shakespeare", "hf")


def _load_files(config: DataConfig) -> Dataset:
    """A data set read from files (:mod:`fedloom.data.vision`, :mod:`~fedloom.data.leaf`,
    :mod:`~fedloom.data.hf`). Files that are missing and cannot be downloaded are a
    :class:`ConfigError` naming ``data.root`` (or ``data.hf``); a present but corrupt file
    stays a :class:`DataError` naming the file."""
    from fedloom.data import hf, leaf, vision
    from fedloom.data.dataset import standardized
    from fedloom.errors import DataMissing

    name, root, scale = config.dataset, config.root, config.normalize != "none"
    if name == "shakespeare" and config.normalize == "standardize":
        raise ConfigError(
            "data.normalize: shakespeare's inputs are character indices, which cannot be "
            "standardized; use auto or none"
        )
    if name == "hf" and config.hf is None:
        raise ConfigError("data.hf: required with dataset: hf (at least data.hf.path)")
    try:
        if name == "fashion_mnist":
            return vision.load_fashion_mnist(root, standardize=scale, verify=config.verify)
        if name == "emnist":
            split = config.emnist.split
            return vision.load_emnist(root, split, standardize=scale, verify=config.verify)
        if name == "cifar10":
            return vision.load_cifar10(root, standardize=scale, verify=config.verify)
        if name == "shakespeare":
            return leaf.load_shakespeare(root)
        if name == "femnist":
            dataset = leaf.load_femnist(root)
        else:
            assert config.hf is not None
            dataset = hf.load_hf(**config.hf.model_dump())
    except DataMissing as exc:
        key = "data.hf" if name == "hf" else "data.root"
        chosen = ""
        if root is None and name != "hf":
            source = f"FEDLOOM_DATA={os.environ['FEDLOOM_DATA']}" if os.environ.get(
                "FEDLOOM_DATA") else "the default root"  # fmt: skip
            chosen = f"not set, so {source} was used: "
        raise ConfigError(f"{key}: {chosen}{exc}") from None
    return standardized(dataset) if config.normalize == "standardize" else dataset


def _load_mnist(root: str | None, *, standardize: bool = True) -> Dataset:
    """MNIST from ``data.root``; files that are missing and cannot be downloaded are a
    :class:`ConfigError` naming ``data.root`` (and ``FEDLOOM_DATA`` when that chose the
    folder), so the command exits 2 with one line that says where the files were expected.
    Files that are present but corrupt stay a :class:`DataError`: the path is right, the
    data is not."""
    from fedloom.data.mnist import MNIST_FILES, default_data_root, load_mnist

    folder = Path(root if root is not None else default_data_root()).expanduser() / "mnist"
    try:
        present = folder.is_dir() and all(
            (folder / f"{stem}.gz").exists() or (folder / stem).exists()
            for stem in MNIST_FILES.values()
        )
    except OSError:  # not even a usable path (a name too long, say)
        present = False
    try:
        return load_mnist(root, standardize=standardize)
    except (DataError, OSError) as exc:
        if present:
            raise
        chosen = ""  # how the folder was chosen, when data.root did not choose it
        if root is None and os.environ.get("FEDLOOM_DATA"):
            chosen = f"not set, so FEDLOOM_DATA={os.environ['FEDLOOM_DATA']} was used: "
        elif root is None:
            chosen = f"not set (nor FEDLOOM_DATA), so the default {folder.parent} was used: "
        raise ConfigError(f"data.root: {chosen}{exc}") from None


def _load_adult(config: DataConfig) -> Dataset:
    """UCI Adult; a sensitive column that does not exist is a :class:`ConfigError` naming
    ``data.adult.sensitive``, missing files that cannot be downloaded one naming
    ``data.root``."""
    from fedloom.data.adult import CATEGORICAL, load_adult

    options = config.adult or AdultConfig()
    if options.sensitive not in CATEGORICAL:
        raise ConfigError(
            f"data.adult.sensitive: Adult has no categorical column {options.sensitive!r}; "
            f"choose one of {', '.join(CATEGORICAL)}"
        )
    try:
        dataset = load_adult(
            config.root, sensitive=options.sensitive, drop_sensitive=options.drop_sensitive
        )
    except DataError as exc:
        if "could not be downloaded" not in str(exc) and "not found in" not in str(exc):
            raise
        raise ConfigError(f"data.root: {exc}") from None
    return standardized(dataset) if config.normalize == "standardize" else dataset


def build_partitioner(config: DataConfig) -> Partitioner:
    """The partitioner value the ``data.partition`` section describes."""
    spec = config.partition
    kind = spec.kind
    entry = REGISTRY.entry("partition", kind)
    options = spec.model_dump(exclude={"kind"})
    if "num_clients" in inspect.signature(entry.factory).parameters:
        if config.num_clients is None:
            raise ConfigError(f"data.num_clients: required for the {kind!r} partition")
        options["num_clients"] = config.num_clients
    try:
        partitioner: Partitioner = entry.factory(**options)
    except DataError as exc:  # e.g. a flwr-datasets partitioner that does not exist
        raise ConfigError(f"data.partition: {exc}") from None
    return partitioner


def build_federated_data(
    config: DataConfig, *, seed: int, dataset: Dataset | None = None
) -> FederatedDataset:
    """Load (unless given) and partition the configured dataset."""
    dataset = dataset if dataset is not None else build_dataset(config, seed=seed)
    partitioner = build_partitioner(config)
    if isinstance(partitioner, Natural) and dataset.train_owner is not None:
        natural_clients = len(np.unique(dataset.train_owner))
        if config.num_clients not in (None, natural_clients):
            raise ConfigError(
                f"data.num_clients: {dataset.name} has {natural_clients} natural clients, got "
                f"{config.num_clients}; leave num_clients empty (null) with the natural "
                "partition"
            )
    try:
        data = federate(dataset, partitioner, holdout_fraction=config.holdout_fraction, seed=seed)
    except (ValueError, FedloomError) as exc:  # the data cannot be split this way
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"data.partition: {str(exc).splitlines()[0]} (data.num_clients = "
            f"{config.num_clients}, {len(dataset.train_y)} training examples in {dataset.name})"
        ) from None
    if config.scanners is None:
        return data
    from fedloom.data.scanners import apply_scanners, draw_scanners

    if data.dataset.train_x.ndim != 4:
        raise ConfigError(
            f"data.scanners: need image inputs [N, C, H, W]; {dataset.name} has inputs shaped "
            f"{tuple(data.dataset.train_x.shape[1:])}"
        )
    spec = config.scanners
    scanners = draw_scanners(data.num_clients, spec.kinds, spec.strength, seed=seed)
    return apply_scanners(data, scanners, seed=seed)
