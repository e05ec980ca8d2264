"""Durable tensor files: safetensors written atomically, read without executing anything.

Checkpoints, a deployed client's own algorithm state and the client-state store's spill
files all need the same guarantee: a ``kill -9`` at any moment leaves either the old file
or the new one, never a torn file. The new file goes to a temporary name, is flushed and
synced, renamed over the old one, and the rename itself is synced. Reading goes through
safetensors, which cannot run code (no pickle), so a file from elsewhere is safe to open.

Every file also carries two SHA-256 digests in its metadata: one of the tensors (names,
dtypes, shapes and bytes) and one of the other metadata (a checkpoint's JSON header). Reading
recomputes both, so a flipped bit on disk, a truncated copy or a hand-edited header is an
error naming the file, not a run that silently continues from damaged state. (A digest
guards against damage, not against someone who can rewrite the file and its digest; the
readers also check what they load: shapes, names, finiteness.)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedloom.errors import FedloomError

__all__ = ["metadata_sha256", "read_tensors", "tensors_sha256", "write_tensors"]

TENSORS_DIGEST = "fedloom_tensors_sha256"
METADATA_DIGEST = "fedloom_metadata_sha256"


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: every name, dtype, shape and byte, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metadata_sha256(metadata: Mapping[str, str]) -> str:
    """SHA-256 of string metadata (the digests themselves left out)."""
    own = {k: v for k, v in metadata.items() if k not in (TENSORS_DIGEST, METADATA_DIGEST)}
    return hashlib.sha256(json.dumps(own, sort_keys=True).encode()).hexdigest()


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
    stamped = dict(metadata or {})
    stamped[TENSORS_DIGEST] = tensors_sha256(contiguous)
    stamped[METADATA_DIGEST] = metadata_sha256(stamped)
    try:
        save_file(contiguous, str(temporary), metadata=stamped)
        if durable:
            with temporary.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except Exception as exc:  # disk full, permissions, ...: the old file is untouched
        if temporary.is_file():
            temporary.unlink()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kept = " (the previous version is intact)" if path.exists() else ""
        raise FedloomError(f"cannot write {path}: {reason}{kept}") from None
    if durable:
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # make the rename itself durable
        finally:
            os.close(directory_fd)
    return path


def read_tensors(
    path: str | Path, *, what: str = "file", require_digest: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, its digests verified; a one-line
    :class:`~fedloom.errors.FedloomError` naming ``what`` it was supposed to be when it
    cannot be read or does not match its digests. ``require_digest=False`` accepts a file
    without digests (one written by another program)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FedloomError(f"cannot read the {what} {path}: {reason}") from None
    if TENSORS_DIGEST not in metadata or METADATA_DIGEST not in metadata:
        if require_digest:
            raise FedloomError(
                f"the {what} {path} has no checksums: it was not written by this fedloom "
                "(or its metadata was removed)"
            )
        return tensors, metadata
    if metadata_sha256(metadata) != metadata[METADATA_DIGEST]:
        raise FedloomError(f"the {what} {path} is damaged: its header does not match its checksum")
    if tensors_sha256(tensors) != metadata[TENSORS_DIGEST]:
        raise FedloomError(
            f"the {what} {path} is damaged: its tensor data does not match its checksum"
        )
    for key in (TENSORS_DIGEST, METADATA_DIGEST):
        del metadata[key]
    return tensors, metadata
