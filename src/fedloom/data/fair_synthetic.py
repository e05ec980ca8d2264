"""A synthetic tabular data set with a sensitive attribute, for fairness experiments.

Every example has a sensitive attribute ``s`` in {0, 1} (a group), ``num_features`` "merit"
features ``z ~ N(0, I)`` drawn independently of the group, and ``num_proxies`` proxy features
that leak the group (``(2s - 1) * proxy_strength + N(0, 1)``, like a postcode standing for
ethnicity). The label depends on the merit and, by ``label_bias``, directly on the group:

    y = 1[ u + label_bias * (2s - 1) + noise * eps > 0 ],   u = w.z / ||w||,  eps ~ N(0, 1)

so ``u`` and ``eps`` are standard normal and the labels' base rates differ between groups by
``P(y=1|s=1) - P(y=1|s=0) = 2 Phi(label_bias / sqrt(1 + noise^2)) - 1`` (0 for
``label_bias = 0``: ``s`` and ``y`` independent; it grows to 1 with ``label_bias``). That is
the controllable correlation between the sensitive attribute and the label. A predictor that
uses the proxies reproduces the bias (a demographic-parity gap); one that uses only ``z`` has
predictions independent of ``s`` (no gap) and loses the accuracy that the group explains:
the price of fairness here is set by ``label_bias`` and ``noise``.

The federation: client ``k`` holds ``examples_per_client`` examples whose share of group 1 is
``group_mixes[k]`` (default: evenly spread from 0.1 to 0.9 over the clients, so clients see
very different group mixes); ``train_owner`` says who holds what (``Natural`` partition). The
global test set has ``test_size`` examples, half of each group. The group id travels with
every batch as the extra entry ``"s"`` (``train_extra`` / ``test_extra``).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import erf, sqrt
from typing import Any

import numpy as np
import torch

from fedloom.data.dataset import Dataset

__all__ = ["label_gap", "load_fair_synthetic"]


def label_gap(label_bias: float, noise: float) -> float:
    """``P(y=1|s=1) - P(y=1|s=0)`` of the generator (module docstring).

    >>> label_gap(0.0, 1.0), round(label_gap(1.0, 0.0), 4)
    (0.0, 0.6827)
    """
    return erf(label_bias / sqrt(1.0 + noise**2) / sqrt(2.0))


def _draw(
    rng: np.random.Generator,
    groups: np.ndarray,
    w: np.ndarray,
    *,
    label_bias: float,
    noise: float,
    num_proxies: int,
    proxy_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    z = rng.normal(size=(len(groups), len(w)))
    sign = 2.0 * groups - 1.0
    proxies = sign[:, None] * proxy_strength + rng.normal(size=(len(groups), num_proxies))
    u = z @ w / np.linalg.norm(w)
    y = (u + label_bias * sign + noise * rng.normal(size=len(groups)) > 0).astype(np.int64)
    return np.concatenate([z, proxies], axis=1).astype(np.float32), y


def load_fair_synthetic(
    *,
    num_clients: int = 10,
    examples_per_client: int = 400,
    label_bias: float = 1.0,
    noise: float = 0.5,
    num_features: int = 6,
    num_proxies: int = 2,
    proxy_strength: float = 2.0,
    group_mixes: Sequence[float] | None = None,
    test_size: int = 2000,
    seed: int = 0,
) -> Dataset:
    """Generate the data set of the module docstring (binary labels, groups ``s`` in {0, 1}).

    Args:
        num_clients: clients (natural owners of the training examples).
        examples_per_client: examples each client holds (training and held-out).
        label_bias: how strongly the label depends on the group (0: independent).
        noise: label noise (standard deviation of ``eps`` relative to ``u``).
        num_features: merit features ``z`` (independent of the group).
        num_proxies: features that leak the group.
        proxy_strength: how far apart the groups' proxy means are (in noise units, halved).
        group_mixes: each client's share of group 1 (default: 0.1 .. 0.9, evenly spread).
        test_size: examples of the global test set (half of each group).
        seed: the random stream of everything above.

    >>> data = load_fair_synthetic(num_clients=4, examples_per_client=50, test_size=10)
    >>> data.train_x.shape, sorted(data.train_extra), data.num_classes
    (torch.Size([200, 8]), ['s'], 2)
    """
    if num_clients < 1 or examples_per_client < 1 or test_size < 2:
        raise ValueError(
            "num_clients and examples_per_client must be >= 1 and test_size >= 2, got "
            f"{num_clients}, {examples_per_client}, {test_size}"
        )
    if label_bias < 0 or noise < 0 or num_features < 1 or num_proxies < 0:
        raise ValueError(
            "label_bias and noise must be >= 0, num_features >= 1 and num_proxies >= 0; got "
            f"{label_bias}, {noise}, {num_features}, {num_proxies}"
        )
    mixes = np.linspace(0.1, 0.9, num_clients) if group_mixes is None else np.asarray(group_mixes)
    if len(mixes) != num_clients or np.any((mixes < 0) | (mixes > 1)):
        raise ValueError(
            f"group_mixes must give one share of group 1 in [0, 1] per client "
            f"({num_clients}), got {list(np.round(mixes, 4))}"
        )
    rng = np.random.default_rng(seed)
    w = rng.normal(size=num_features)
    options: dict[str, Any] = {
        "label_bias": label_bias,
        "noise": noise,
        "num_proxies": num_proxies,
        "proxy_strength": proxy_strength,
    }
    xs, ys, ss, owner = [], [], [], []
    for client, mix in enumerate(mixes):
        ones = int(round(mix * examples_per_client))
        groups = rng.permutation(
            np.r_[np.ones(ones, np.int64), np.zeros(examples_per_client - ones, np.int64)]
        )
        x, y = _draw(rng, groups, w, **options)
        xs.append(x)
        ys.append(y)
        ss.append(groups)
        owner.append(np.full(examples_per_client, client))
    test_groups = rng.permutation(np.arange(test_size) % 2)
    test_x, test_y = _draw(rng, test_groups, w, **options)
    return Dataset(
        name=f"fair_synthetic(bias={label_bias:g})",
        train_x=torch.from_numpy(np.concatenate(xs)),
        train_y=torch.from_numpy(np.concatenate(ys)),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=2,
        train_owner=np.concatenate(owner),
        train_extra={"s": torch.from_numpy(np.concatenate(ss))},
        test_extra={"s": torch.from_numpy(test_groups.astype(np.int64))},
    )
