"""Reference models. Any ``torch.nn.Module`` factory works; these are the papers' models.

Parameter counts are pinned by tests: McMahan et al. 2017's 2NN has 199,210 and its CNN
1,663,370.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedloom.rng import derive_seed

__all__ = [
    "MODELS",
    "ModelSource",
    "initial_module",
    "digits_cnn",
    "digits_cnn_bn",
    "digits_cnn_in",
    "digits_mlp",
    "logistic_regression",
    "mnist_2nn",
    "mnist_cnn",
    "mnist_small_cnn",
]


def mnist_2nn(num_classes: int = 10) -> nn.Module:
    """McMahan et al. 2017 "2NN": 784-200-200-10 with ReLU (199,210 parameters)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 200),
        nn.ReLU(),
        nn.Linear(200, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    """McMahan et al. 2017 CNN: two 5x5 conv layers (32, 64), 512 dense (1,663,370 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def logistic_regression(num_features: int = 60, num_classes: int = 10) -> nn.Module:
    """Multinomial logistic regression, the FedProx paper's model for Synthetic data."""
    return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))


def digits_mlp(num_classes: int = 10) -> nn.Module:
    """A small MLP for 8x8 digits: 64-64-10 (4,810 parameters)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, num_classes))


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """A small CNN for 8x8 digits: conv 16 -> pool -> dense 64 (17,258 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def digits_cnn_bn(num_classes: int = 10) -> nn.Module:
    """digits_cnn with batch norm after the convolution and the dense layer (17,418 parameters).

    The model for FedBN (``algorithm: fedbn``, with ``model.buffers: local``); its float
    buffers (running statistics) keep it off the vectorized engine (``auto`` trains it
    sequentially).
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def digits_cnn_in(num_classes: int = 10) -> nn.Module:
    """digits_cnn with instance norm after the convolution (17,290 parameters).

    Affine instance norm without running statistics: each image's feature maps are normalized by their own mean and variance, which removes a
    per-image brightness shift or contrast scale before the dense layers: a model option
    against feature skew (``data.scanners``). It has no buffers, so it trains vectorized.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.InstanceNorm2d(16, affine=True),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def mnist_small_cnn(num_classes: int = 10, *, norm: str | None = None) -> nn.Module:
    """A small CNN for 28x28 inputs: conv 16 (5x5, stride 2) -> pool -> dense 64 (51,306
    parameters; 51,338 with instance norm, 51,466 with batch norm), fast enough for multi-seed studies on a few cores.

    ``norm``: ``None``; ``"instance"``, affine instance norm after the convolution (no
    buffers; a per-image brightness shift or contrast scale is normalized away, against
    feature skew); ``"batch"``, batch norm after the convolution and the dense layer (the
    model for FedBN, with ``buffers="local"``). Not in :data:`MODELS` (the config's model
    names): the scanner-skew study builds it with ``functools.partial``.
    """
    if norm not in (None, "instance", "batch"):
        raise ValueError(f"norm must be None, 'instance' or 'batch', got {norm!r}")
    conv_norm: list[nn.Module] = []
    dense_norm: list[nn.Module] = []
    if norm == "instance":
        conv_norm = [nn.InstanceNorm2d(16, affine=True)]
    elif norm == "batch":
        conv_norm, dense_norm = [nn.BatchNorm2d(16)], [nn.BatchNorm1d(64)]
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2),
        *conv_norm,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        *dense_norm,
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_2nn": mnist_2nn,
    "mnist_cnn": mnist_cnn,
    "logistic_regression": logistic_regression,
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "digits_cnn_bn": digits_cnn_bn,
    "digits_cnn_in": digits_cnn_in,
}


ModelSource = nn.Module | Callable[[], nn.Module]
"""A model factory, or a module whose weights start the run."""


def initial_module(model: ModelSource, *, seed: int) -> nn.Module:
    """The model whose weights start the run.

    A factory is called under a seeded, forked RNG so that the initial weights depend only
    on the run seed and the global torch RNG is left as it was. A module is used as given.
    """
    if isinstance(model, nn.Module):
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        return model()
