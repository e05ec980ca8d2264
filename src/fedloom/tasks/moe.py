"""Federated mixture of experts: a pool of experts averaged across clients and a gate that
routes each example, personal to each client or shared (Jacobs et al. 1991, "Adaptive
mixtures of local experts"; in federated learning, Zec et al. 2020, "Federated learning
using a mixture of experts", and Reisser et al. 2021, "Federated Mixture of Experts").

The model holds ``E`` experts (small MLPs, each ``[B, d] -> [B, C]`` logits) and a gating
network giving a softmax distribution ``g(x)`` over the experts for every example; its output
is a mixture, of the experts' class probabilities (``mix="probabilities"``, the default;
Jacobs et al.'s competitive mixture, as log-probabilities so that the output is logits)

    f(x) = log sum_e g_e(x) * softmax(expert_e(x))          ([B, C])

or of their logits (``mix="logits"``)

    f(x) = sum_e g_e(x) * expert_e(x)                       ([B, C])

trained with plain cross-entropy (the task is classification's). With probabilities the
cross-entropy is ``-log sum_e g_e p_e(y|x)``: an expert is pulled toward an example in
proportion to how well it already explains it (its posterior responsibility), so experts
specialize; mixed logits make them cooperate instead, and a gate then tends to collapse onto
one expert. The experts' parameters
(``experts.*``) are averaged by FedAvg like any other; the gate's (``gate.*``) either stay
on each client (``gate="personal"``, through FedPer's personal-parameter mechanism,
:mod:`fedloom.algorithms.personal`: the server never changes them) or are averaged too
(``gate="shared"``). A personal gate lets clients from different distributions pick
different experts while every expert still learns from all the clients that use it.

In a config the ``task`` section builds the model (``model.name: auto``) and, with
``gate: personal``, makes ``gate.*`` personal under the configured algorithm.

>>> setup = MixtureOfExperts(num_experts=3, expert_hidden=(8,), gate_hidden=0)
>>> model = setup.model(num_features=4, num_classes=2)
>>> model(torch.zeros(5, 4)).shape, model.gate_weights(torch.zeros(5, 4)).shape
(torch.Size([5, 2]), torch.Size([5, 3]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torch import nn

from fedloom.tasks.base import Task
from fedloom.tasks.builtin import classification

__all__ = ["GATES", "GATE_PATTERN", "MIXES", "MixtureOfExperts", "MoEModel", "mixture_of_experts"]

GATES = ("personal", "shared")
MIXES = ("probabilities", "logits")
GATE_PATTERN = "gate.*"
"""The ``fnmatch`` pattern of the gate's parameter names (FedPer's ``personal`` list)."""

Gate = Literal["personal", "shared"]
Mix = Literal["probabilities", "logits"]


def _mlp(num_features: int, hidden: Sequence[int], num_outputs: int) -> nn.Sequential:
    """``Flatten -> (Linear -> ReLU) per hidden width -> Linear(., num_outputs)``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = num_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


class MoEModel(nn.Module):
    """``E`` experts and a gate ``g = softmax(gate(x))``; ``forward(x)`` is
    ``log sum_e g_e softmax(expert_e(x))`` (``mix="probabilities"``) or
    ``sum_e g_e expert_e(x)`` (``mix="logits"``).

    Parameter names: ``experts.<e>.*`` and ``gate.*``.
    """

    def __init__(
        self, experts: Sequence[nn.Module], gate: nn.Module, *, mix: Mix = "probabilities"
    ):
        super().__init__()
        if len(experts) < 1:
            raise ValueError(f"num_experts must be >= 1, got {len(experts)}")
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}, got {mix!r}")
        self.experts = nn.ModuleList(experts)
        self.gate = gate
        self.mix = mix

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's distribution over the experts, ``[B, E]`` (non-negative, rows sum to 1)."""
        return torch.softmax(self.gate(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, C]
        if self.mix == "logits":
            return torch.einsum("be,bec->bc", self.gate_weights(x), outputs)
        log_gate = torch.log_softmax(self.gate(x), dim=-1)  # [B, E]
        return torch.logsumexp(log_gate.unsqueeze(-1) + torch.log_softmax(outputs, -1), dim=1)


def check_options(
    num_experts: int, expert_hidden: Sequence[int], gate_hidden: int, gate: str, mix: str
) -> None:
    """A ``ValueError`` naming the option unless every size is valid and ``gate`` known."""
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be an integer >= 1, got {num_experts!r}")
    if isinstance(expert_hidden, int | str) or any(
        isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in expert_hidden
    ):
        raise ValueError(
            f"expert_hidden must be a list of layer widths >= 1 (empty: linear experts), "
            f"got {expert_hidden!r}"
        )
    if isinstance(gate_hidden, bool) or not isinstance(gate_hidden, int) or gate_hidden < 0:
        raise ValueError(
            f"gate_hidden must be an integer >= 0 (0: a linear gate), got {gate_hidden!r}"
        )
    if gate not in GATES:
        raise ValueError(f"gate must be one of {', '.join(GATES)}, got {gate!r}")
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {', '.join(MIXES)}, got {mix!r}")


@dataclass(frozen=True)
class MixtureOfExperts:
    """The settings of a mixture of experts and what they build: :meth:`model`, :meth:`task`.

    Attributes:
        num_experts: E, the size of the expert pool (>= 1).
        expert_hidden: each expert's hidden-layer widths (each >= 1; empty: linear experts).
        gate_hidden: the gate's hidden width (0: a linear gate, softmax of ``W x + b``).
        gate: ``"personal"`` (each client keeps its gate; the server never changes it) or
            ``"shared"`` (averaged like the experts).
        mix: mix the experts' ``"probabilities"`` (output: the log of the mixture) or their
            ``"logits"``.
    """

    num_experts: int = 4
    expert_hidden: tuple[int, ...] = (32,)
    gate_hidden: int = 16
    gate: Gate = "personal"
    mix: Mix = "probabilities"

    def __post_init__(self) -> None:
        object.__setattr__(self, "expert_hidden", tuple(self.expert_hidden))
        check_options(self.num_experts, self.expert_hidden, self.gate_hidden, self.gate, self.mix)

    def model(self, num_features: int, num_classes: int) -> MoEModel:
        """``E`` experts ``_mlp(d, expert_hidden, C)`` and a gate ``_mlp(d, [gate_hidden], E)``."""
        experts = [
            _mlp(num_features, self.expert_hidden, num_classes) for _ in range(self.num_experts)
        ]
        gate_widths = (self.gate_hidden,) if self.gate_hidden else ()
        gate = _mlp(num_features, gate_widths, self.num_experts)
        return MoEModel(experts, gate, mix=self.mix)

    @property
    def personal_patterns(self) -> tuple[str, ...]:
        """What a personal gate keeps on each client (FedPer's ``personal``); empty if shared."""
        return (GATE_PATTERN,) if self.gate == "personal" else ()

    def task(self) -> Task:
        """Cross-entropy of the mixture's logits, accuracy (classification's)."""
        return replace(classification(), name="mixture_of_experts")


def mixture_of_experts(
    num_experts: Annotated[int, Ge(1)] = 4,
    expert_hidden: tuple[Annotated[int, Ge(1)], ...] = (32,),
    gate_hidden: Annotated[int, Ge(0)] = 16,
    gate: Gate = "personal",
    mix: Mix = "probabilities",
) -> Task:
    """A federated mixture of experts (see :class:`MixtureOfExperts`; in a config the
    ``task`` section's options also build the model, ``model.name: auto``, and
    ``gate: personal`` keeps ``gate.*`` on each client).

    >>> mixture_of_experts(num_experts=3).name
    'mixture_of_experts'
    """
    return MixtureOfExperts(num_experts, tuple(expert_hidden), gate_hidden, gate, mix).task()
