"""Feature skew: each client's "scanner", a fixed input transform applied to its own rows.

Real federations see the same kind of data through different instruments (a hospital's
scanner, a phone's camera): the labels mean the same, the inputs carry an "accent". A
:class:`Scanner` is one such accent for image inputs; :func:`draw_scanners` gives each
client one, deterministic from the seed; :func:`apply_scanners` transforms every row a
client owns (its training and held-out rows; each row belongs to exactly one client) and
leaves all other rows, and the global test set, as they are.

The global test set stays clean: it measures the shared model on unaccented inputs. The
metric that carries each client's scanner is the per-client held-out accuracy.

Transforms work on pixels in [0, 1]. :func:`apply_scanners` maps the inputs there with the
training set's overall minimum and maximum (so standardized inputs work too), transforms,
and maps back.

Kinds (``p`` is the scanner's parameter; results are clipped to [0, 1]):

- ``brightness``: ``x + p``;
- ``contrast``: ``0.5 + p (x - 0.5)``;
- ``gamma``: ``x ** p``;
- ``blur``: ``(1 - p) x + p box3(x)``, ``box3`` the 3x3 mean with zero padding;
- ``noise``: ``x + p z``, ``z ~ N(0, 1)`` fixed per row (drawn from the seed and client).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from fedloom.data.federated import FederatedDataset
from fedloom.rng import numpy_rng

__all__ = ["SCANNER_KINDS", "Scanner", "apply_scanners", "draw_scanners", "scan"]

SCANNER_KINDS = ("brightness", "contrast", "gamma", "blur", "noise")


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean of each channel of ``[N, C, H, W]`` images, zero padding."""
    channels = x.shape[1]
    kernel = torch.full((channels, 1, 3, 3), 1.0 / 9.0, dtype=x.dtype)
    return F.conv2d(x, kernel, padding=1, groups=channels)


def scan(
    kind: str, param: float, x: torch.Tensor, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Transform images ``x`` (``[N, C, H, W]``, pixels in [0, 1]) by scanner ``kind`` with
    parameter ``param``; ``noise`` (shaped like ``x``) is the standard normal draw of the
    ``noise`` kind."""
    if kind == "brightness":
        out = x + param
    elif kind == "contrast":
        out = 0.5 + param * (x - 0.5)
    elif kind == "gamma":
        out = x.clamp(0.0, 1.0) ** param
    elif kind == "blur":
        if x.ndim != 4:
            raise ValueError(f"blur needs [N, C, H, W] images, got shape {tuple(x.shape)}")
        out = (1.0 - param) * x + param * _box3(x)
    elif kind == "noise":
        if noise is None:
            raise ValueError("the noise scanner needs its noise draw")
        out = x + param * noise
    else:
        raise ValueError(f"unknown scanner kind {kind!r}; choose from {SCANNER_KINDS}")
    return out.clamp(0.0, 1.0)


@dataclass(frozen=True)
class Scanner:
    """One client's scanner: a transform kind and its parameter."""

    kind: str
    param: float

    def __post_init__(self) -> None:
        if self.kind not in SCANNER_KINDS:
            raise ValueError(f"unknown scanner kind {self.kind!r}; choose from {SCANNER_KINDS}")


def draw_scanners(
    num_clients: int, kinds: Sequence[str], strength: float, *, seed: int
) -> list[Scanner]:
    """One scanner per client: client ``k`` gets ``kinds[k % len(kinds)]``, its parameter
    drawn from ``numpy_rng(seed, "scanner", k)`` with magnitude ``u`` in [0.5, 1] and a
    random direction where the kind has one:

    - brightness ``±0.5 s u``; contrast ``(1 + 3 s u) ** ±1``; gamma ``(1 + 2 s u) ** ±1``;
    - blur ``s u``; noise ``0.3 s u``  (``s`` = ``strength`` in (0, 1]).
    """
    if not kinds:
        raise ValueError("kinds: give at least one scanner kind")
    unknown = [k for k in kinds if k not in SCANNER_KINDS]
    if unknown:
        raise ValueError(f"kinds: unknown scanner kinds {unknown}; choose from {SCANNER_KINDS}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    scanners = []
    for k in range(num_clients):
        rng = numpy_rng(seed, "scanner", k)
        u = float(rng.uniform(0.5, 1.0))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        kind = kinds[k % len(kinds)]
        param = {
            "brightness": sign * 0.5 * strength * u,
            "contrast": (1.0 + 3.0 * strength * u) ** sign,
            "gamma": (1.0 + 2.0 * strength * u) ** sign,
            "blur": strength * u,
            "noise": 0.3 * strength * u,
        }[kind]
        scanners.append(Scanner(kind, param))
    return scanners


def apply_scanners(
    data: FederatedDataset, scanners: Sequence[Scanner], *, seed: int
) -> FederatedDataset:
    """``data`` with client ``k``'s training and held-out rows seen through
    ``scanners[k]``; rows no client owns and the global test set are unchanged."""
    if len(scanners) != data.num_clients:
        raise ValueError(f"{len(scanners)} scanners for {data.num_clients} clients")
    dataset = data.dataset
    x = dataset.train_x
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        raise ValueError(f"{dataset.name}: the training inputs are constant; nothing to scan")
    out = x.clone()
    for k, scanner in enumerate(scanners):
        rows = torch.from_numpy(
            np.sort(np.concatenate([data.client_train[k], data.client_holdout[k]]))
        )
        pixels = (x[rows] - lo) / (hi - lo)
        noise = None
        if scanner.kind == "noise":
            draw = numpy_rng(seed, "scanner-noise", k).standard_normal(tuple(pixels.shape))
            noise = torch.from_numpy(draw).to(pixels.dtype)
        out[rows] = (scan(scanner.kind, scanner.param, pixels, noise) * (hi - lo) + lo).to(x.dtype)
    return replace(data, dataset=replace(dataset, train_x=out))
