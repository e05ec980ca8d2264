"""Flat parameter vectors and the spec that turns them back into a module's tensors.

fedloom moves, aggregates, clips and serializes parameters as one flat float32 vector. A
:class:`ParamSpec` records the names, shapes and offsets so that per-tensor *views* (never
copies) can be handed to ``torch.func.functional_call``. Buffers (e.g. batch-norm running
statistics) get a spec of their own because FL treats them differently from trainable weights:
they are either averaged like parameters or kept local to each client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ParamSpec",
    "buffer_spec",
    "flatten_buffers",
    "flatten_params",
    "load_flat",
    "param_spec",
]


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of tensors packed into one flat float32 vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(shape) for shape in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        offsets, total = [], 0
        for size in self.sizes:
            offsets.append(total)
            total += size
        return tuple(offsets)

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-tensor views into ``flat`` (shape ``[..., P]``; leading dims are kept).

        Writing into a view writes into ``flat``; gradients taken with respect to ``flat``
        flow through the views, which is what lets local training differentiate a flat vector.
        """
        if flat.shape[-1] != self.num_params:
            raise ValueError(
                f"flat vector has {flat.shape[-1]} entries but the spec describes "
                f"{self.num_params}; was it made for another model?"
            )
        lead = flat.shape[:-1]
        return {
            name: flat[..., offset : offset + size].view(*lead, *shape)
            for name, shape, offset, size in zip(
                self.names, self.shapes, self.offsets, self.sizes, strict=True
            )
        }

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pack named tensors (in spec order) into a new flat float32 vector."""
        if not self.names:
            return torch.zeros(0, dtype=torch.float32)
        missing = [name for name in self.names if name not in tensors]
        if missing:
            raise KeyError(f"tensors missing for {missing}")
        return torch.cat(
            [tensors[name].detach().reshape(-1).to(torch.float32) for name in self.names]
        )


def _float_items(items: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    return [(name, t) for name, t in items if t.is_floating_point()]


def param_spec(module: nn.Module) -> ParamSpec:
    """The spec of a module's trainable parameters, in ``named_parameters`` order."""
    items = list(module.named_parameters())
    return ParamSpec(tuple(n for n, _ in items), tuple(tuple(p.shape) for _, p in items))


def buffer_spec(module: nn.Module) -> ParamSpec:
    """The spec of a module's floating-point buffers.

    Integer buffers (such as batch norm's ``num_batches_tracked``) are bookkeeping, not
    statistics: they are not averaged and stay in the module.
    """
    items = _float_items(module.named_buffers())
    return ParamSpec(tuple(n for n, _ in items), tuple(tuple(b.shape) for _, b in items))


def flatten_params(module: nn.Module) -> torch.Tensor:
    """A new flat float32 vector of the module's parameters."""
    return param_spec(module).flatten(dict(module.named_parameters()))


def flatten_buffers(module: nn.Module) -> torch.Tensor:
    """A new flat float32 vector of the module's floating-point buffers."""
    return buffer_spec(module).flatten(dict(module.named_buffers()))


def load_flat(module: nn.Module, params: torch.Tensor, buffers: torch.Tensor | None = None) -> None:
    """Copy flat parameters (and optionally buffers) into ``module`` in place.

    This is an edge operation (saving a model, handing it to user code); training itself uses
    views with ``functional_call`` and never mutates a module.
    """
    with torch.no_grad():
        for name, view in param_spec(module).views(params).items():
            module.get_parameter(name).copy_(view)
        if buffers is not None and buffers.numel():
            for name, view in buffer_spec(module).views(buffers).items():
                module.get_buffer(name).copy_(view)
