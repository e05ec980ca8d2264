"""Plain values that cross module boundaries: what a client is asked to do and what it returns.

They are frozen dataclasses so that they can be passed between the round loop, executors and
callbacks without anyone mutating another's copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["ClientFailure", "ClientPlan", "ClientResult", "RoundReport"]


@dataclass(frozen=True)
class ClientPlan:
    """The work one sampled client does in one round.

    ``seed`` is derived from (run seed, round, client id) by :mod:`fedloom.rng`, so that any
    executor, in any process, trains the client identically.

    Attributes:
        client_id, round, seed: who, when, and the client's random stream.
        epochs, steps: this client's amount of local work when it differs from the shared
            settings (heterogeneous local work, stragglers); ``steps`` wins over ``epochs``.
        correction: a vector added to every local gradient (SCAFFOLD's ``c - c_k``).
        start: the flat parameters local training starts from when they differ from the
            global model (FedPer and FedBN: the global model with the client's personal
            values); the update is still ``final - global``.
        extras: the client's own tensors its objective terms read, by name, merged into the
            round's shared context (EWC's Fisher and anchor, ``ewc/fisher``, ``ewc/anchor``:
            copied from the client-state store in simulation, never sent to the server);
            ``None`` for none.
    """

    client_id: int
    round: int
    seed: int
    epochs: int | None = None
    steps: int | None = None
    correction: torch.Tensor | None = None
    start: torch.Tensor | None = None
    extras: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class ClientResult:
    """What a client sends back after local training.

    Attributes:
        client_id: the client.
        update: ``w_k' - w_t`` as a flat float32 vector of length P.
        buffers: the client's float buffers after training (length Q, possibly 0).
        num_examples: ``n_k``, the size of the client's training split (the FedAvg weight).
        num_steps: local optimizer steps taken (``tau_k``).
        num_example_passes: examples seen in local training, summed over steps.
        train_loss: mean training loss over the local steps, weighted by batch size.
        statistics: numbers the algorithm asked the client for (see
            :mod:`fedloom.client.program`), by name.
        state_report: what a client that keeps its own algorithm state (a deployed SCAFFOLD
            client's ``c_k``) reports for the server's state, by name; ``None`` when the
            server keeps the client's state and computes the report itself (simulation).
    """

    client_id: int
    update: torch.Tensor
    buffers: torch.Tensor
    num_examples: int
    num_steps: int
    num_example_passes: int
    train_loss: float
    statistics: Mapping[str, float] = field(default_factory=dict)
    state_report: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class ClientFailure:
    """A client that did not produce a usable result this round, and why.

    Failures are values, not exceptions, so that one client cannot stop a round: the round
    loop counts them (``num_failures``), logs them and judges them by its failure policy
    (``on_client_error``).

    Attributes:
        client_id: the client.
        reason: one line for the log: the exception type and message when the client's
            training raised (``"IndexError: Target 10 is out of bounds."``), else what
            happened (``"worker process 1 died (signal 9, SIGKILL)"``, ``"dropped out: ..."``).
        round: the round the client was planned for (0-based, like
            :attr:`ClientPlan.round`); ``None`` when the executor did not say.
    """

    client_id: int
    reason: str
    round: int | None = None


@dataclass(frozen=True)
class RoundReport:
    """Everything measured in one round; one line of ``metrics.jsonl``.

    ``clients`` holds per-client values of the round's valid results (``train_loss``,
    ``update_norm``, ``num_examples``, one entry per client in the same order), filled only
    when a callback asks for them (``wants_clients``: TensorBoard's histograms); it is not
    written to the metrics files or checkpoints.
    """

    round: int
    metrics: dict[str, float]
    clients: Mapping[str, tuple[float, ...]] = field(default_factory=dict, compare=False)

    def as_record(self) -> dict[str, float]:
        return {"round": self.round, **self.metrics}
