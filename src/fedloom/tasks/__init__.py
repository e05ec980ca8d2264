"""Tasks: what a model is trained to do, as a value (loss, metrics, what a batch holds).

Nothing below this layer knows about labels or cross-entropy: local training asks the task
for the loss, evaluation asks it for metrics. Built in:

- :func:`classification`: cross-entropy, accuracy (today's behaviour, bit for bit), or
  class-weighted cross-entropy (``class_weights``);
- :func:`focal`: focal loss (Lin et al. 2017) for a rare class, accuracy;
- :func:`regression`: mean squared error, MSE and R^2;
- :func:`next_token`: next-token prediction over sequences, loss per token, perplexity;
- :func:`adversarial_fairness`: a predictor trained against an adversary that guesses a
  sensitive attribute (Zhang et al. 2018), with fairness metrics (demographic-parity and
  equalized-odds gaps); see :mod:`fedloom.tasks.adversarial`;
- :func:`mixture_of_experts`: a pool of experts averaged across clients and a gate per
  example, personal or shared; see :mod:`fedloom.tasks.moe`.
- :func:`gan`: a generator trained against a discriminator (Goodfellow et al. 2014); see
  :mod:`fedloom.tasks.gan`.

Any task with logits ``[B, C]`` for integer labels gets recall, precision, F1 and PR-AUC of
chosen (rare) classes with :func:`with_class_metrics`.

A task of your own is a :class:`Task` built from two functions of ``(outputs, batch)``; see
``examples/custom_task.py``.
"""

from collections.abc import Callable

from fedloom.tasks.adversarial import AdversarialFairness, adversarial_fairness
from fedloom.tasks.base import Batch, Task, num_rows, take
from fedloom.tasks.builtin import balanced_weights, classification, next_token, regression
from fedloom.tasks.focal import focal
from fedloom.tasks.gan import Gan, gan
from fedloom.tasks.imbalance import with_class_metrics
from fedloom.tasks.moe import MixtureOfExperts, mixture_of_experts

__all__ = [
    "TASKS",
    "AdversarialFairness",
    "Batch",
    "MixtureOfExperts",
    "Gan",
    "Task",
    "adversarial_fairness",
    "balanced_weights",
    "classification",
    "focal",
    "mixture_of_experts",
    "gan",
    "next_token",
    "num_rows",
    "regression",
    "take",
    "with_class_metrics",
]

TASKS: dict[str, Callable[..., Task]] = {
    "classification": classification,
    "regression": regression,
    "next_token": next_token,
    "focal": focal,
    "adversarial_fairness": adversarial_fairness,
    "mixture_of_experts": mixture_of_experts,
    "gan": gan,
}
"""The built-in tasks by config name (``task.name``); their keyword options are the
config section's keys."""
