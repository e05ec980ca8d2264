"""Real client failures for the failure-handling tests, on any engine, in any process.

Nothing here is a mock: the failing client runs the engines' own training code on data or a
model that makes it fail, as corrupt data or a crashing device would. The helpers live in an
importable module so that process workers and Ray actors can unpickle them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import torch
from torch import nn

from fedloom.data import FederatedDataset

MARK = 12345.0
"""An input value no real digits example has: a marked example kills a worker."""


def break_labels(data: FederatedDataset, client_id: int) -> FederatedDataset:
    """A copy of ``data`` whose client's training labels are out of range (``C``).

    Its cross-entropy raises (``IndexError: Target 10 is out of bounds.`` one client at a
    time, a ``RuntimeError`` for a vmapped cohort) on every engine; other clients and every
    held-out split are untouched.
    """
    labels = data.dataset.train_y.clone()
    labels[torch.from_numpy(data.client_train[client_id])] = data.num_classes
    return replace(data, dataset=replace(data.dataset, train_y=labels))


def mark_client(data: FederatedDataset, client_id: int) -> FederatedDataset:
    """A copy of ``data`` whose client's training inputs all hold :data:`MARK`."""
    inputs = data.dataset.train_x.clone()
    inputs[torch.from_numpy(data.client_train[client_id])] = MARK
    return replace(data, dataset=replace(data.dataset, train_x=inputs))


class DiesOnMark(nn.Module):
    """``inner``, except that outside the process that built it, a batch holding a
    :data:`MARK` kills its own process with SIGKILL (a worker whose client crashes it).

    The check is Python control flow on data, which ``vmap`` refuses: a vectorized cohort
    raises, the isolation retrains it client by client, and the marked client's turn kills
    the worker.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.home_pid = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.home_pid and bool((x == MARK).any()):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(x)


def dying_digits_mlp() -> nn.Module:
    """:func:`fedloom.models.digits_mlp` inside :class:`DiesOnMark`."""
    from fedloom.models import digits_mlp

    return DiesOnMark(digits_mlp())
