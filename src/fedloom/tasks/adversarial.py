"""Fairness by adversarial training (Zhang et al. 2018, "Mitigating unwanted biases with
adversarial learning"), as a model and a task that any FedAvg-family algorithm trains.

A **predictor** (an encoder and a head) predicts the label ``y``; an **adversary** predicts
the sensitive attribute ``s`` (a group id, a batch entry such as ``"s"``) from what the
predictor gives it: its output (``reads="output"``, Zhang et al.'s demographic-parity
setting; as log-probabilities, which a shift of all logits leaves alone, so the predictor
cannot hide or leak ``s`` in a direction no prediction depends on) or its hidden
representation (``reads="representation"``, as in Ganin et al.'s
domain-adversarial networks). Each client does local minimax steps on

    predictor:  min_w  L_task(w) - lam * L_adv(w, u)        adversary:  min_u  L_adv(w, u)

(``L`` are cross-entropies), in one of two ways (``mode``):

- ``"reversal"``: the adversary reads the predictor through a gradient-reversal layer
  (:func:`fedloom.tasks.reversal.grad_reverse` with scale ``lam``), and every local step is
  one SGD step on ``L_task + L_adv``: the adversary descends ``L_adv``, the predictor
  ``L_task - lam L_adv``, simultaneously (as in Zhang et al.'s algorithm, without its
  projection term ``proj_{grad L_adv} grad L_task``, which needs the two gradients apart).
  Nothing else changes, so it runs on every engine and over the network.
- ``"alternating"``: each round a client first trains the adversary alone (the predictor
  frozen: the adversary reads a detached copy), then the predictor alone against the frozen
  adversary (whose parameters are detached), each phase its full local work. Simulation
  engines only: the simulation's ``AlternatingExecutor`` (``sim/alternating.py``) runs the
  two phases (:meth:`AdversarialModel.training_phases`). Weight decay still shrinks the
  frozen player's weights in its off phase; leave it 0 with this mode.

The model's output is ``[B, C + G]``: the predictor's ``C`` logits, then the adversary's
``G``. Both parts are plain parameters of one model, so FedAvg (or any algorithm) averages
both. The task's loss is ``CE(logits, y) + CE(adversary logits, s)`` per example and its
metrics are ``accuracy`` (the score), ``adversary_accuracy``, ``demographic_parity_gap``,
``equalized_odds_gap`` and ``group_majority`` (the adversary's chance level), on the global
test set and on every client's held-out split (:mod:`fedloom.tasks.fairness`).

>>> setup = AdversarialFairness(lam=1.0, num_groups=2)
>>> model = setup.model(num_features=5, num_classes=2)
>>> model(torch.zeros(3, 5)).shape  # 2 predictor logits, then 2 adversary logits
torch.Size([3, 4])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Ge
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedloom.tasks.base import Batch, Task
from fedloom.tasks.fairness import FairnessGaps, FairnessIndicators
from fedloom.tasks.reversal import grad_reverse

__all__ = [
    "MODES",
    "READS",
    "AdversarialFairness",
    "AdversarialModel",
    "adversarial_fairness",
]

READS = ("output", "representation")
MODES = ("reversal", "alternating")
PHASES = ("both", "adversary", "predictor")

Reads = Literal["output", "representation"]
Mode = Literal["reversal", "alternating"]


class AdversarialModel(nn.Module):
    """``encoder -> head`` (the predictor) and an ``adversary`` reading the head's output
    (log-softmax of its logits) or the encoder's output;
    ``forward(x) = cat(logits, adversary logits)``.

    ``phase`` says who learns from the loss ``L_task + L_adv``: ``"both"`` (gradient
    reversal with scale ``lam``), ``"adversary"`` (the predictor's outputs are detached) or
    ``"predictor"`` (the adversary's parameters are detached; the reversal still scales the
    predictor's share by ``lam``). The phase changes gradients only, never the outputs.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        adversary: nn.Module,
        *,
        reads: Reads = "output",
        lam: float = 1.0,
        mode: Mode = "reversal",
        sees_label: bool = False,
        phase: str = "both",
    ):
        super().__init__()
        check_options(lam, reads, mode)
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        self.encoder, self.head, self.adversary = encoder, head, adversary
        self.reads, self.lam, self.mode, self.phase = reads, float(lam), mode, phase
        self.sees_label = sees_label

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(x)
        logits = self.head(hidden)
        # the output as log-probabilities: a shift of all logits changes no prediction, and
        # the raw logits would let the predictor leak (or hide) s in that free direction
        read = torch.log_softmax(logits, -1) if self.reads == "output" else hidden
        if self.sees_label:  # equalized odds: the adversary also gets the true label
            if y is None:
                raise ValueError("an adversary that sees the label needs forward(x, y)")
            classes = torch.arange(logits.shape[-1], device=y.device)
            read = torch.cat([read, (y.reshape(-1, 1) == classes).to(read.dtype)], dim=-1)
        if self.phase == "adversary":
            return torch.cat([_frozen(logits), self.adversary(read.detach())], dim=-1)
        reversed_read = grad_reverse(read, self.lam)
        if self.phase == "predictor":
            frozen = {n: _frozen(p) for n, p in self.adversary.named_parameters()}
            guess = functional_call(self.adversary, frozen, (reversed_read,))
        else:
            guess = self.adversary(reversed_read)
        return torch.cat([logits, guess], dim=-1)

    def with_phase(self, phase: str) -> AdversarialModel:
        """The same model (shared parameters and submodules) in another training phase."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        other = copy.copy(self)
        other.__dict__ = dict(self.__dict__)
        other.phase = phase
        return other

    def training_phases(self) -> tuple[AdversarialModel, ...]:
        """With ``mode="alternating"``, the two phases of a round in order: the adversary,
        then the predictor (the simulation's ``AlternatingExecutor``); with
        gradient reversal none (one phase, both players at once)."""
        if self.mode != "alternating":
            return ()
        return self.with_phase("adversary"), self.with_phase("predictor")


def _frozen(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s value with a zero gradient: detached, but still in the graph (plain
    ``torch.autograd.grad`` over every parameter, the sequential engine's, needs each one
    used; ``torch.func`` would give the zeros by itself)."""
    return tensor.detach() + 0.0 * tensor


def check_options(lam: float, reads: str, mode: str) -> None:
    """A ``ValueError`` naming the option unless ``lam`` is finite and ``>= 0`` and
    ``reads``/``mode`` are known."""
    if not lam >= 0 or lam == float("inf"):
        raise ValueError(
            f"lam must be a finite number >= 0 (0: the adversary only watches; larger "
            f"values push the predictor harder away from what the adversary exploits), got {lam}"
        )
    if reads not in READS:
        raise ValueError(f"reads must be one of {', '.join(READS)}, got {reads!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass(frozen=True)
class AdversarialLoss:
    """``CE(outputs[:, :C], y) + CE(outputs[:, C:], s)`` per example, ``C`` the classes."""

    num_groups: int
    sensitive: str = "s"

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        logits, guess = split_outputs(outputs, self.num_groups)
        groups = _groups(batch, self.sensitive, self.num_groups)
        task = F.cross_entropy(logits, batch["y"], reduction="none")
        return task + F.cross_entropy(guess, groups, reduction="none")


@dataclass(frozen=True)
class AdversarialMetrics:
    """Per-example ``accuracy``, ``adversary_accuracy`` and the fairness indicators."""

    num_groups: int
    sensitive: str = "s"

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        logits, guess = split_outputs(outputs, self.num_groups)
        groups = _groups(batch, self.sensitive, self.num_groups)
        predicted = logits.argmax(1)
        values = {
            "accuracy": (predicted == batch["y"]).float(),
            "adversary_accuracy": (guess.argmax(1) == groups).float(),
        }
        values.update(
            FairnessIndicators(logits.shape[1], self.num_groups)(predicted, batch["y"], groups)
        )
        return values


@dataclass(frozen=True)
class AdversarialDerive:
    """The demographic-parity and equalized-odds gaps from the indicator means."""

    num_groups: int

    def __call__(self, means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        classes = sum(1 for name in means if name.startswith("_s0_p"))
        return FairnessGaps(classes, self.num_groups)(means)


def split_outputs(outputs: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predictor logits [B, C], adversary logits [B, G])`` of an :class:`AdversarialModel`."""
    if outputs.ndim != 2 or outputs.shape[1] <= num_groups:
        raise ValueError(
            f"adversarial fairness needs model outputs [B, C + G] (C classes, then the "
            f"adversary's G = {num_groups} group logits), got {tuple(outputs.shape)}; use "
            "AdversarialFairness.model(...) or an AdversarialModel"
        )
    return outputs[:, :-num_groups], outputs[:, -num_groups:]


def _groups(batch: Batch, sensitive: str, num_groups: int) -> torch.Tensor:
    if sensitive not in batch:
        raise ValueError(
            f"sensitive: the batch has no {sensitive!r} entry (it holds {sorted(batch)}); give "
            "the data set its sensitive attribute as an extra (Dataset(train_extra={"
            f"{sensitive!r}: ...}})) or name the entry that holds it"
        )
    return batch[sensitive].reshape(-1).long()


@dataclass(frozen=True)
class AdversarialFairness:
    """The settings of adversarial fairness and what they build: :meth:`model` and :meth:`task`.

    Attributes:
        lam: the adversary's weight in the predictor's objective ``L_task - lam L_adv``
            (>= 0; 0: the adversary watches, the predictor ignores it).
        reads: ``"output"`` (the predictor's output, as log-probabilities) or
            ``"representation"`` (its hidden layer).
        mode: ``"reversal"`` (simultaneous steps through gradient reversal; every engine)
            or ``"alternating"`` (adversary phase, then predictor phase, each round;
            simulation engines).
        sensitive: the batch entry holding the group id of each example.
        adversary_sees_label: also give the adversary the true label (one-hot), Zhang et
            al.'s setting for equalized odds: it then looks for group information beyond
            what the label explains, so the predictor is pushed toward equal error rates
            rather than equal positive rates. The model then takes ``forward(x, y)``.
        num_groups: G, the number of sensitive groups (the adversary's classes).
        hidden: width of the predictor's hidden layer.
        adversary_hidden: width of the adversary's hidden layer (0: a logistic adversary).
    """

    lam: float = 1.0
    reads: Reads = "output"
    mode: Mode = "reversal"
    sensitive: str = "s"
    num_groups: int = 2
    hidden: int = 32
    adversary_hidden: int = 16
    adversary_sees_label: bool = False

    def __post_init__(self) -> None:
        check_options(self.lam, self.reads, self.mode)
        if self.num_groups < 2:
            raise ValueError(f"num_groups must be >= 2, got {self.num_groups}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.adversary_hidden < 0:
            raise ValueError(f"adversary_hidden must be >= 0, got {self.adversary_hidden}")

    def model(self, num_features: int, num_classes: int) -> AdversarialModel:
        """A tabular model: ``Linear(d, hidden) -> ReLU -> Linear(hidden, C)`` and an adversary
        ``Linear(in, adversary_hidden) -> ReLU -> Linear(., G)`` (or one linear layer)."""
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(num_features, self.hidden), nn.ReLU())
        head = nn.Linear(self.hidden, num_classes)
        width = num_classes if self.reads == "output" else self.hidden
        width += num_classes if self.adversary_sees_label else 0
        if self.adversary_hidden:
            adversary: nn.Module = nn.Sequential(
                nn.Linear(width, self.adversary_hidden),
                nn.ReLU(),
                nn.Linear(self.adversary_hidden, self.num_groups),
            )
        else:
            adversary = nn.Linear(width, self.num_groups)
        return AdversarialModel(
            encoder,
            head,
            adversary,
            reads=self.reads,
            lam=self.lam,
            mode=self.mode,
            sees_label=self.adversary_sees_label,
        )

    def task(self) -> Task:
        """The loss and metrics (module docstring); score: task accuracy."""
        return Task(
            name="adversarial_fairness",
            loss=AdversarialLoss(self.num_groups, self.sensitive),
            metrics=AdversarialMetrics(self.num_groups, self.sensitive),
            score="accuracy",
            derive=AdversarialDerive(self.num_groups),
            inputs=("x", "y") if self.adversary_sees_label else ("x",),
        )


def adversarial_fairness(
    lam: Annotated[float, Ge(0)] = 1.0,
    reads: Reads = "output",
    mode: Mode = "reversal",
    sensitive: str = "s",
    num_groups: Annotated[int, Ge(2)] = 2,
    hidden: Annotated[int, Ge(1)] = 32,
    adversary_hidden: Annotated[int, Ge(0)] = 16,
    adversary_sees_label: bool = False,
) -> Task:
    """Fairness by adversarial training (Zhang et al. 2018): the task of an
    :class:`AdversarialModel` (see :class:`AdversarialFairness`; in a config the ``task``
    section's options also build the model, ``model.name: auto``).

    >>> adversarial_fairness(lam=0.5).score
    'accuracy'
    """
    return AdversarialFairness(
        lam, reads, mode, sensitive, num_groups, hidden, adversary_hidden, adversary_sees_label
    ).task()
