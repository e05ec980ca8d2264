"""FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized Federated
Learning", ICML, Algorithm 1): a shared body (the representation), a personal head.

Like FedPer, the parameters matching ``personal`` (the head) stay on each client and only the
body is averaged (:mod:`fedloom.algorithms.personal`); a client that never took part starts
from the global head, which is the initial model's. Unlike FedPer, the two parts do not train
together: each sampled client

1. takes ``head_epochs`` passes (or ``head_steps`` steps) of SGD on its head with the body
   frozen at the received global body;
2. then takes the usual local work (``client.epochs`` / ``client.steps``) on the body with
   the new head frozen;

and sends ``final - global``, whose head coordinates the server drops before aggregating.
The paper motivates the split: with many local steps on a low-dimensional head each client
nearly solves its own head given the body, so the body's gradients see personalized heads
and learn a representation that serves them all. The schedule runs on every engine through
the client program (:mod:`fedloom.client.alternation`).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.algorithms.personal import Personal

__all__ = ["fedrep"]


def fedrep(
    personal: Sequence[str],
    *,
    head_epochs: int | None = None,
    head_steps: int | None = None,
    server_lr: float = 1.0,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedRep (Collins et al. 2021): train the personal head first, then the shared body.

    ``personal`` holds ``fnmatch`` patterns over parameter names (the head, e.g. the last
    layer of ``digits_cnn``, ``["6.*"]``). Give the head phase's work as ``head_epochs``
    (the paper uses several epochs on the head, one on the body) or ``head_steps``; neither
    means one epoch. The body phase uses the local settings' work.

    >>> fedrep(["6.*"], head_epochs=5).personal.head_epochs
    5
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    if isinstance(personal, str):
        personal = [personal]
    if head_epochs is None and head_steps is None:
        head_epochs = 1
    return Algorithm(
        name="fedrep",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        personal=Personal(
            patterns=tuple(personal),
            field="algorithm.personal",
            head_epochs=head_epochs,
            head_steps=head_steps,
        ),
    )
