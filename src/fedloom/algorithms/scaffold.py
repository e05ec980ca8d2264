"""SCAFFOLD (Karimireddy et al. 2020, "Stochastic Controlled Averaging for Federated
Learning"), with option II control variates.

The server keeps a control variate ``c`` and every client its own ``c_k`` (zero until it
first takes part; kept unchanged while it sits out). Each local step uses the corrected
gradient ``g + c - c_k``, which cancels the client's drift towards its own optimum. After
``K`` steps of learning rate ``lr`` the client sets ``c_k+ = c_k - c + (x - y_k)/(K lr)`` and
the server moves ``x`` by the averaged update and ``c`` by ``(1/N) sum_k (c_k+ - c_k)``.
In simulation the clients' ``c_k`` live in :class:`~fedloom.algorithms.ServerState`.
"""

from __future__ import annotations

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm, scaffold_client_control

__all__ = ["scaffold", "scaffold_client_control"]


def scaffold(*, server_lr: float = 1.0, weighting: Weighting = "uniform") -> Algorithm:
    """SCAFFOLD: corrected local steps, control variates on both sides.

    The paper averages ``Delta y`` uniformly over the sampled clients (the default here);
    ``server_lr`` is its global step size ``eta_g``.
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="scaffold",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        control_variates=True,
    )
