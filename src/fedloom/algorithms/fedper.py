"""FedPer and FedBN: FedAvg with some parameters personal (see
:mod:`fedloom.algorithms.personal` for the mechanism).

- FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers"): the
  base layers are averaged, the personalization layers (the head) stay on each client.
- FedBN (Li et al. 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
  Normalization"): every normalization layer stays local, the rest is averaged. Its running
  statistics must stay local too (``model.buffers: local``; ``simulate`` refuses
  ``buffers="average"`` for it).

The server aggregates only the shared coordinates: its personal coordinates stay those of the
initial model, which is what a client that never trained starts from.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.algorithms.personal import Personal

__all__ = ["fedbn", "fedper"]


def fedper(
    personal: Sequence[str],
    *,
    server_lr: float = 1.0,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedPer (Arivazhagan et al. 2019): parameters matching `personal` stay on each client.

    ``personal`` holds ``fnmatch`` patterns over parameter names (e.g. the last layer of
    ``digits_cnn``, ``["6.*"]``); the other parameters are averaged as in FedAvg.

    >>> fedper(["6.*"]).personal.patterns
    ('6.*',)
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    if isinstance(personal, str):
        personal = [personal]
    return Algorithm(
        name="fedper",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        personal=Personal(patterns=tuple(personal), field="algorithm.personal"),
    )


def fedbn(*, server_lr: float = 1.0, weighting: Weighting = "examples") -> Algorithm:
    """FedBN (Li et al. 2021): normalization layers stay on each client (model.buffers: local).

    Every BatchNorm, GroupNorm, LayerNorm and InstanceNorm parameter is personal; run it with
    local buffers (``model.buffers: local``) so the running statistics stay local too.

    >>> fedbn().personal.norm_layers
    True
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="fedbn",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        personal=Personal(norm_layers=True, field="algorithm (fedbn)"),
    )
