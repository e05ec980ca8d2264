"""Tasks: what a model is trained to do, as a value (loss, metrics, what a batch holds).

Nothing below this layer knows about labels or cross-entropy: local training asks the task
for the loss, evaluation asks it for metrics. Built in:

- :func:`classification`: cross-entropy, accuracy (today's behaviour, bit for bit);
- :func:`regression`: mean squared error, MSE and R^2;
- :func:`next_token`: next-token prediction over sequences, loss per token, perplexity.

Any task with logits ``[B, C]`` for integer labels gets recall, precision, F1 and PR-AUC of
chosen (rare) classes with :func:`with_class_metrics`.

A task of your own is a :class:`Task` built from two functions of ``(outputs, batch)``; see
``examples/custom_task.py``.
"""

from fedloom.tasks.base import Batch, Task, num_rows, take
from fedloom.tasks.builtin import TASKS, classification, next_token, regression
from fedloom.tasks.imbalance import with_class_metrics

__all__ = [
    "TASKS",
    "Batch",
    "Task",
    "classification",
    "next_token",
    "num_rows",
    "regression",
    "take",
    "with_class_metrics",
]
