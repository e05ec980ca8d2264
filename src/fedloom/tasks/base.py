"""The :class:`Task` value and how the engines use it.

A batch is a mapping of named tensors with one row per example: ``"x"`` (the model's input),
``"y"`` (the target), and any others the data set carries (an attention mask, a sequence
length, a sample weight; see :attr:`fedloom.data.Dataset.train_extra`). Every engine slices
all of them with the same row index, pads them together in a vectorized cohort, and hands the
whole batch to the task. A task says

- ``loss(outputs, batch) -> [B]``: the loss of every example. fedloom reduces it: the mean
  over the batch, or over the real examples only when a vectorized cohort pads a client's
  short batch (a 0/1 mask). Because the task returns per-example values, padding can never
  leak into the gradient, and a user's loss needs no masking logic.
- ``metrics(outputs, batch) -> {name: [B]}``: per-example values whose mean is reported
  (accuracy is the mean of "correct"). Means of per-example values can be computed for the
  global test set and for every client's held-out split in one pass (a bincount), whatever
  the number of clients. A name starting with ``"_"`` is an input to ``derive`` only: its
  mean is computed like the others but never reported (the target's moments behind R^2, the
  true-positive and score-histogram indicators behind recall and PR-AUC).
- ``derive(means) -> {name: value}`` (optional): metrics that are functions of those means
  (R^2 from the MSE and the target's moments, perplexity from the mean token loss, recall
  as ``mean(tp) / mean(is_positive)``). It gets NumPy arrays, one entry per client or a
  single entry for the global set, the ``"_"`` ones included.
- ``inputs``: the batch entries passed to the model, in order (``("x",)`` by default;
  ``("x", "mask")`` for a model whose ``forward(x, mask)`` takes an attention mask).
- ``score``: the metric whose per-client spread is reported (``client_<score>_mean``,
  ``_worst10`` ...), shown in the progress bar and summary; ``higher_is_better`` says which
  end is "worst".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Batch", "Task", "num_rows", "take"]

Batch = Mapping[str, torch.Tensor]
"""Named tensors of a batch, one row per example: ``"x"`` (model input), ``"y"`` (target) and
any extra entries of the data set (masks, lengths ...)."""


def take(batch: Batch, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    """The rows ``index`` of every tensor of ``batch`` (a gather, or a view for a slice).

    >>> take({"x": torch.arange(6).view(3, 2), "y": torch.tensor([7, 8, 9])}, slice(1, 3))["y"]
    tensor([8, 9])
    """
    return {name: tensor[index] for name, tensor in batch.items()}


def num_rows(batch: Batch) -> int:
    """The number of examples in ``batch`` (the common length of its tensors)."""
    return len(batch["y"]) if "y" in batch else len(next(iter(batch.values())))


PerExample = Callable[[torch.Tensor, Batch], torch.Tensor]
PerExampleMetrics = Callable[[torch.Tensor, Batch], Mapping[str, torch.Tensor]]
Derive = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Task:
    """What the model is trained to do (see the module docstring).

    Attributes:
        name: shown in logs and run names.
        loss: ``(outputs, batch) -> [B]`` per-example loss.
        metrics: ``(outputs, batch) -> {name: [B]}`` per-example metric values.
        score: the metric name for per-client spreads and progress.
        higher_is_better: whether a larger ``score`` is better.
        derive: metrics computed from the means of the per-example ones.
        mean_loss: an optional fused ``(outputs, batch) -> scalar`` mean loss, used when
            no example is padded (classification uses ``F.cross_entropy``, which rounds
            differently from the mean of per-example losses; this keeps earlier runs' numbers).
        inputs: the batch entries passed to the model's ``forward``, in order.

    Functions must be module-level (picklable) for the process and Ray engines.
    """

    name: str
    loss: PerExample
    metrics: PerExampleMetrics
    score: str
    higher_is_better: bool = True
    derive: Derive | None = None
    mean_loss: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None
    inputs: tuple[str, ...] = ("x",)

    def __post_init__(self) -> None:
        if not self.inputs or not all(isinstance(n, str) and n for n in self.inputs):
            raise ValueError(
                f"task {self.name!r}: inputs must name at least one batch entry, got "
                f"{self.inputs!r}"
            )

    def model_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The positional arguments of the model's ``forward`` for ``batch``."""
        missing = [name for name in self.inputs if name not in batch]
        if missing:
            raise ValueError(
                f"task {self.name!r} feeds {list(self.inputs)} to the model, but the batch "
                f"has no {missing} (it holds {sorted(batch)}); give the data set those "
                "entries (Dataset(train_extra=..., test_extra=...)) or change the task's inputs"
            )
        return tuple(batch[name] for name in self.inputs)

    def batch_loss(
        self, outputs: torch.Tensor, batch: Batch, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean loss over the batch, or over its real examples where ``mask`` is 1.

        An all-zero mask gives a zero loss (a padded row of a vectorized cohort)."""
        if mask is None and self.mean_loss is not None:
            return self.mean_loss(outputs, batch)
        per_example = self._per_example_loss(outputs, batch)
        if mask is None:
            return per_example.mean()
        return (per_example * mask).sum() / mask.sum().clamp(min=1.0)

    def _per_example_loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        loss = self.loss(outputs, batch)
        rows = outputs.shape[0]
        if loss.shape != (rows,):
            raise ValueError(
                f"task {self.name!r}: loss must return one value per example, shape ({rows},); "
                f"got {tuple(loss.shape)}. Return the unreduced loss (e.g. reduction='none', "
                "then average over any other axes)"
            )
        return loss

    def example_metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The per-example metric values, checked: one float per example each."""
        values = dict(self.metrics(outputs, batch))
        rows = outputs.shape[0]
        for name, value in values.items():
            if not isinstance(value, torch.Tensor) or value.shape != (rows,):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"task {self.name!r}: metric {name!r} must be a tensor of shape ({rows},) "
                    f"(one value per example), got {shape}"
                )
        if self.score not in values and (self.derive is None):
            raise ValueError(
                f"task {self.name!r}: its score {self.score!r} is not among its metrics "
                f"{sorted(values)}"
            )
        return {name: value.float() for name, value in values.items()}

    def summarize(self, means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The reported metrics from the means of the per-example ones (plus derived).

        Names starting with ``"_"`` (inputs to ``derive``) are left out."""
        out = dict(means)
        if self.derive is not None:
            out.update(self.derive(means))
        return {name: value for name, value in out.items() if not name.startswith("_")}
