"""Durable tensor files: safetensors written atomically, read without executing anything.

Checkpoints, a deployed client's own algorithm state and the client-state store's spill
files all need the same guarantee: a ``kill -9`` at any moment leaves either the old file
or the new one, never a torn file. The new file goes to a temporary name, is flushed and
synced, renamed over the old one, and the rename itself is synced. Reading goes through
safetensors, which cannot run code (no pickle), so a file from elsewhere is safe to open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedloom.errors import FedloomError

__all__ = ["read_tensors", "write_tensors"]


def write_tensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
) -> Path:
    """Atomically replace ``path`` with ``tensors`` (and string ``metadata``).

    ``durable=False`` skips the syncs (a cache that can be rebuilt), keeping the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(temporary), metadata=dict(metadata) if metadata else None)
    if durable:
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
    os.replace(temporary, path)
    if durable:
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # make the rename itself durable
        finally:
            os.close(directory_fd)
    return path


def read_tensors(
    path: str | Path, *, what: str = "file"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file; a clear error naming ``what`` it was
    supposed to be when it cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise FedloomError(f"cannot read the {what} {path}: {exc}") from exc
    return tensors, dict(metadata)
