"""A generative adversarial network (Goodfellow et al. 2014, "Generative Adversarial Nets") as
a model and a task that any FedAvg-family algorithm trains.

A **generator** ``G`` maps a latent ``z ~ N(0, I)`` to an image; a **discriminator** ``D``
gives a logit ``l`` for "real". With ``sigma`` the logistic function and
``BCE(l, t) = -t log sigma(l) - (1 - t) log(1 - sigma(l))`` (so ``BCE(l, 1) = softplus(-l)``,
``BCE(l, 0) = softplus(l)``):

    discriminator:  L_D = BCE(D(x), 1) + BCE(D(G(z)), 0)
    generator, minimax (Goodfellow's value function):  L_G = -BCE(D(G(z)), 0) = log(1 - D(G(z)))
    generator, non-saturating (Goodfellow's practical form):  L_G = BCE(D(G(z)), 1)
                                                                 = -log D(G(z))

(:func:`discriminator_loss`, :func:`generator_loss`). Two ways to train (``mode``), the same
two as adversarial fairness (:mod:`fedloom.tasks.adversarial`):

- ``"minimax"``: ``D`` reads the generated images through a gradient-reversal layer
  (:func:`fedloom.tasks.reversal.grad_reverse`), and every local step is one SGD step on
  ``L_D``: ``D`` descends it, ``G`` ascends its fake half, i.e. descends the minimax ``L_G``,
  simultaneously. Nothing else changes.
- ``"alternating"`` (the default): each round a client first trains ``D`` alone (``G``'s
  images detached), then ``G`` alone against the frozen ``D`` with the non-saturating loss,
  each phase its full local work (the simulation's ``AlternatingExecutor``,
  ``sim/alternating.py``).

The model's output is ``[B, 3]``: ``D``'s logit for the real example, ``D``'s logit for one
generated image, and a flag that is 1 in the generator phase (the loss then is the
non-saturating ``L_G``, plus a constant from the frozen real half). The latent is drawn inside
``forward`` from torch's global generator (seed it, ``torch.manual_seed``, for a reproducible
run), so use the sequential engine (``engine: sequential``): the vectorized engine's
``vmap`` refuses random draws, and its isolation then retrains every client one by one with
the sequential engine, slower than asking for it. Parameters are
named ``generator.*`` and ``discriminator.*``: FedAvg averages both, or
``fedper(["discriminator.*"])`` keeps every discriminator on its client and averages only
the generator.

>>> setup = Gan(latent=8, hidden=16, disc_hidden=16)
>>> setup.model(num_features=64)(torch.zeros(5, 1, 8, 8)).shape
torch.Size([5, 3])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedloom.tasks.base import Batch, Task
from fedloom.tasks.reversal import grad_reverse

__all__ = [
    "GAN_MODES",
    "Gan",
    "GanModel",
    "discriminator_loss",
    "gan",
    "generator_loss",
]

GAN_MODES = ("alternating", "minimax")
PHASES = ("both", "discriminator", "generator")
GanMode = Literal["alternating", "minimax"]


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``BCE(real, 1) + BCE(fake, 0) = softplus(-real) + softplus(fake)`` per example.

    >>> round(float(discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))), 4)
    1.3863
    """
    return F.softplus(-real) + F.softplus(fake)


def generator_loss(fake: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss per example from ``D``'s logits for generated images:
    ``"minimax"``: ``log(1 - sigma(fake)) = -softplus(fake)``; ``"non_saturating"``:
    ``-log sigma(fake) = softplus(-fake)``."""
    if kind == "minimax":
        return -F.softplus(fake)
    if kind == "non_saturating":
        return F.softplus(-fake)
    raise ValueError(f"kind must be minimax or non_saturating, got {kind!r}")


def _frozen(tensor: torch.Tensor) -> torch.Tensor:
    """The value with a zero gradient, still in the graph (see ``tasks.adversarial``)."""
    return tensor.detach() + 0.0 * tensor


class GanModel(nn.Module):
    """A ``generator`` (latent -> flat image in [0, 1]) and a ``discriminator`` (flat image ->
    one logit); ``forward(x) = [D(x), D(G(z)), generator-phase flag]`` with one fresh ``z``
    per row of ``x``. ``phase`` says who learns (module docstring)."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        latent: int,
        mode: GanMode = "alternating",
        phase: str = "both",
    ):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"mode must be one of {', '.join(GAN_MODES)}, got {mode!r}")
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        self.generator, self.discriminator = generator, discriminator
        self.latent, self.mode, self.phase = int(latent), mode, phase

    def sample(self, num: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` generated flat images ``[num, D]`` (values in [0, 1])."""
        z = torch.randn(num, self.latent, generator=generator)
        return self.generator(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        z = torch.randn(flat.shape[0], self.latent, dtype=flat.dtype, device=flat.device)
        fake = self.generator(z)
        flag = torch.zeros(flat.shape[0], 1, dtype=flat.dtype, device=flat.device)
        if self.phase == "discriminator":
            real, guess = self.discriminator(flat), self.discriminator(_frozen(fake))
        elif self.phase == "generator":
            frozen = {n: _frozen(p) for n, p in self.discriminator.named_parameters()}
            real = functional_call(self.discriminator, frozen, (flat,)).detach()
            guess = functional_call(self.discriminator, frozen, (fake,))
            flag = flag + 1.0
        else:  # minimax: D descends L_D, G (through the reversal) ascends it
            real, guess = self.discriminator(flat), self.discriminator(grad_reverse(fake, 1.0))
        return torch.cat([real, guess, flag], dim=-1)

    def with_phase(self, phase: str) -> GanModel:
        """The same model (shared parameters and submodules) in another training phase."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        other = copy.copy(self)
        other.__dict__ = dict(self.__dict__)
        other.phase = phase
        return other

    def training_phases(self) -> tuple[GanModel, ...]:
        """``mode="alternating"``: the discriminator phase, then the generator phase (the
        simulation's ``AlternatingExecutor``); ``"minimax"``: none (one phase)."""
        if self.mode != "alternating":
            return ()
        return self.with_phase("discriminator"), self.with_phase("generator")


def _check_outputs(outputs: torch.Tensor) -> None:
    if outputs.ndim != 2 or outputs.shape[1] != 3:
        raise ValueError(
            f"the gan task needs model outputs [B, 3] (D(x), D(G(z)), phase flag), got "
            f"{tuple(outputs.shape)}; use Gan.model(...) or a GanModel"
        )


def gan_loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``L_D`` per example, or in the generator phase (flag 1) the non-saturating ``L_G``
    plus the frozen real half ``BCE(D(x), 1)`` (a constant for the generator)."""
    _check_outputs(outputs)
    real, fake, flag = outputs[:, 0], outputs[:, 1], outputs[:, 2]
    fake_term = torch.where(flag > 0.5, generator_loss(fake), F.softplus(fake))
    return F.softplus(-real) + fake_term


def gan_metrics(outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    """``D``'s accuracy on real (logit > 0) and generated (logit < 0) examples, their mean
    ``discriminator_accuracy`` (0.5 at the equilibrium), ``L_D`` and the non-saturating
    ``L_G``."""
    _check_outputs(outputs)
    real, fake = outputs[:, 0], outputs[:, 1]
    real_ok, fake_ok = (real > 0).float(), (fake < 0).float()
    return {
        "discriminator_accuracy": (real_ok + fake_ok) / 2,
        "real_accuracy": real_ok,
        "fake_accuracy": fake_ok,
        "discriminator_loss": discriminator_loss(real, fake),
        "generator_loss": generator_loss(fake),
    }


def _mlp(sizes: list[int], last: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Gan:
    """The settings of a GAN and what they build: :meth:`model` and :meth:`task`.

    Attributes:
        latent: size of the latent ``z`` (>= 1).
        hidden: width of the generator's hidden layer (>= 1).
        disc_hidden: width of the discriminator's hidden layer (>= 1).
        mode: ``"alternating"`` (D phase then G phase, non-saturating ``L_G``) or
            ``"minimax"`` (simultaneous steps through gradient reversal).
    """

    latent: int = 16
    hidden: int = 128
    disc_hidden: int = 64
    mode: GanMode = "alternating"

    def __post_init__(self) -> None:
        for name in ("latent", "hidden", "disc_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.mode not in GAN_MODES:
            raise ValueError(f"mode must be one of {', '.join(GAN_MODES)}, got {self.mode!r}")

    def model(self, num_features: int) -> GanModel:
        """``G: latent -> hidden -> num_features`` (sigmoid: images in [0, 1]) and
        ``D: num_features -> disc_hidden -> 1``, LeakyReLU(0.2) between layers."""
        generator = _mlp([self.latent, self.hidden, num_features], nn.Sigmoid())
        discriminator = _mlp([num_features, self.disc_hidden, 1], None)
        return GanModel(generator, discriminator, latent=self.latent, mode=self.mode)

    def task(self) -> Task:
        """The loss and metrics (:func:`gan_loss`, :func:`gan_metrics`); score: the
        discriminator's accuracy (lower is better for the generator: 0.5 at equilibrium)."""
        return Task(
            name="gan",
            loss=gan_loss,
            metrics=gan_metrics,
            score="discriminator_accuracy",
            higher_is_better=False,
        )


def gan(
    latent: Annotated[int, Ge(1)] = 16,
    hidden: Annotated[int, Ge(1)] = 128,
    disc_hidden: Annotated[int, Ge(1)] = 64,
    mode: GanMode = "alternating",
) -> Task:
    """A generative adversarial network (Goodfellow et al. 2014): the task of a
    :class:`GanModel` (see :class:`Gan`; in a config the ``task`` section's options also build
    the model, ``model.name: auto``).

    >>> gan(mode="minimax").score
    'discriminator_accuracy'
    """
    return Gan(latent, hidden, disc_hidden, mode).task()
