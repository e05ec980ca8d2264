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
    "cifar_resnet",
    "initial_module",
    "digits_cnn",
    "digits_cnn_bn",
    "digits_cnn_in",
    "digits_mlp",
    "logistic_regression",
    "mnist_2nn",
    "mnist_cnn",
    "shakespeare_lstm",
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


class _Block(nn.Module):
    """A ResNet basic block (He et al. 2016) with group norm: conv-GN-ReLU-conv-GN + skip."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(2, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(2, c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(2, c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out)) + self.skip(x))


def cifar_resnet(num_classes: int = 10, width: int = 16, blocks: int = 1) -> nn.Module:
    """A small CIFAR ResNet (He et al. 2016, section 4.2): depth ``6 * blocks + 2`` (8 by
    default, 78,042 parameters; ``blocks=3`` is ResNet-20), stages of ``width``, 2x and 4x
    channels. Batch norm is replaced by group norm with 2 groups, as Reddi et al. 2021
    ("Adaptive Federated Optimization") do for federated CIFAR-10: no running statistics,
    so no buffers to average and the vectorized engine can train it."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.GroupNorm(2, width),
        nn.ReLU(),
    ]
    c_in = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks):
            layers.append(_Block(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


class _CharLSTM(nn.Module):
    def __init__(self, num_classes: int, embed: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embed(tokens))
        return self.out(states[:, -1])


def shakespeare_lstm(
    num_classes: int = 80, embed: int = 8, hidden: int = 256, layers: int = 2
) -> nn.Module:
    """McMahan et al. 2017's Shakespeare model: characters embedded in 8 dimensions, a
    2-layer LSTM of 256 units, logits over the next character (819,920 parameters for
    LEAF's 80 letters). Input ``[B, T]`` character indices, output ``[B, num_classes]``
    for the character after the last one."""
    return _CharLSTM(num_classes, embed, hidden, layers)


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
    "cifar_resnet": cifar_resnet,
    "shakespeare_lstm": shakespeare_lstm,
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
