"""Checkpoints of the round loop: everything needed to continue a run after a crash.

One file, ``checkpoint.safetensors``: the tensors of the server state (global model, the
server optimizer's moments and every other aggregation stage's state, the algorithm's own
state such as SCAFFOLD's control variates, the client-state store, clients' local buffers) as
named safetensors entries, and a JSON header in the file's metadata with the structure of that
state, the round number, the metrics so far and a fingerprint of the run. Every field of
:class:`~fedloom.algorithms.ServerState` is packed generically (tensors, numbers, strings,
tuples, lists and dicts), so a new algorithm's state needs no checkpoint code. Loading it can never execute code (no pickle), so a checkpoint is safe to copy around.

Writes are atomic: the new checkpoint goes to a temporary file that is flushed, synced and
then renamed over the old one, so a ``kill -9`` at any moment leaves either the previous
round's checkpoint or the new one, never a torn file.

There is no separate random-number state to save: every random stream of a run (cohort
sampling, client shuffles, dropout, stragglers) is derived from the run seed, the round and
the client id (:func:`fedloom.rng.derive_seed`), so the round number *is* the RNG state, and
a resumed run with the same seed makes exactly the choices the uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from fedloom.algorithms import ServerState
from fedloom.client.spill import SpilledClientStates
from fedloom.errors import FedloomError
from fedloom.storage import read_tensors, write_tensors
from fedloom.types import RoundReport

__all__ = ["Checkpoints", "Resumed"]

FORMAT = "fedloom-checkpoint-v4"  # v4: checksums; v3: every ServerState field, generically
OLD_FORMATS = ("fedloom-checkpoint-v1", "fedloom-checkpoint-v2", "fedloom-checkpoint-v3")
FILE_NAME = "checkpoint.safetensors"


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint restores: the state after ``len(reports)`` rounds."""

    state: ServerState
    client_buffers: dict[int, torch.Tensor]
    reports: tuple[RoundReport, ...]


def _pack(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON description of ``value``; its tensors are moved into ``tensors``."""
    if value is None or isinstance(value, bool | int | float | str):
        return {"v": value}
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().clone().contiguous()
        return {"t": name}
    if isinstance(value, SpilledClientStates):  # the tensors stay in its own files
        return {"spill": value.reference()}
    if isinstance(value, tuple | list):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_pack(item, tensors) for item in value]}
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, int | str):
                raise TypeError(f"cannot checkpoint a mapping key of type {type(key).__name__}")
            items.append([key, _pack(item, tensors)])
        return {"dict": items}
    raise TypeError(
        f"cannot checkpoint a {type(value).__name__}: server state must be made of tensors, "
        "numbers, strings, None, tuples, lists and dicts"
    )


def _unpack(node: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if "v" in node:
        return node["v"]
    if "t" in node:
        return tensors[node["t"]]
    if "tuple" in node:
        return tuple(_unpack(item, tensors) for item in node["tuple"])
    if "list" in node:
        return [_unpack(item, tensors) for item in node["list"]]
    if "dict" in node:
        return {key: _unpack(item, tensors) for key, item in node["dict"]}
    if "spill" in node:
        return SpilledClientStates.restore(node["spill"])
    raise ValueError(f"unknown checkpoint node {sorted(node)}")


class Checkpoints:
    """The checkpoint of one run in ``directory``; ``fingerprint`` identifies the run
    (its resolved config), so a checkpoint is never resumed by a different run."""

    def __init__(self, directory: str | Path, *, fingerprint: str = ""):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.path = self.directory / FILE_NAME

    def exists(self) -> bool:
        return self.path.exists()

    def save(
        self,
        state: ServerState,
        client_buffers: Mapping[int, torch.Tensor],
        reports: tuple[RoundReport, ...] | list[RoundReport],
    ) -> Path:
        """Atomically replace the checkpoint with the state after ``len(reports)`` rounds."""
        tensors: dict[str, torch.Tensor] = {}
        structure = {f.name: _pack(getattr(state, f.name), tensors) for f in fields(ServerState)}
        structure["client_buffers"] = _pack(dict(client_buffers), tensors)
        header = {
            "fingerprint": self.fingerprint,
            "rounds_done": len(reports),
            "state": structure,
            "reports": [{"round": r.round, "metrics": r.metrics} for r in reports],
        }
        return write_tensors(self.path, tensors, {"format": FORMAT, "header": json.dumps(header)})

    def load(self) -> Resumed | None:
        """The saved state, or ``None`` when there is no checkpoint yet."""
        if not self.path.exists():
            return None
        tensors, metadata = read_tensors(self.path, what="checkpoint")
        if metadata.get("format") in OLD_FORMATS:
            raise FedloomError(
                f"{self.path} was written by an older fedloom ({metadata['format']}), whose "
                "server state has another layout (before the aggregation pipeline, or before "
                "algorithms owned their state); finish that run with the "
                "fedloom that started it, or delete the checkpoint to start over"
            )
        if metadata.get("format") != FORMAT:
            raise FedloomError(f"{self.path} is not a fedloom checkpoint ({FORMAT})")
        try:
            header = json.loads(metadata["header"])
            fingerprint = header["fingerprint"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FedloomError(
                f"the checkpoint {self.path} has a malformed header ({exc}); delete it to start over"
            ) from None
        if self.fingerprint and fingerprint != self.fingerprint:
            raise FedloomError(
                f"the checkpoint in {self.directory} belongs to a different run (its config "
                "differs from this one); use another run name or output folder, or delete the "
                "checkpoint to start over"
            )
        try:
            resumed = _resumed(header, tensors)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FedloomError(
                f"the checkpoint {self.path} is malformed ({type(exc).__name__}: {exc}); "
                "delete it to start over"
            ) from None
        state = resumed.state
        for name, value in (("parameters", state.params), ("buffers", state.buffers)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise FedloomError(
                    f"the checkpoint {self.path} is malformed: its {name} are not a float tensor"
                )
            if not bool(torch.isfinite(value).all()):
                raise FedloomError(
                    f"the checkpoint {self.path} holds non-finite {name} (NaN or inf); "
                    "refusing to continue from it: delete it to start over"
                )
        return resumed


def _resumed(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Resumed:
    """The checkpoint's content; any structural problem raises (the caller names the file)."""
    s = header["state"]
    state = ServerState(**{f.name: _unpack(s[f.name], tensors) for f in fields(ServerState)})
    reports = tuple(RoundReport(int(r["round"]), dict(r["metrics"])) for r in header["reports"])
    if int(header["rounds_done"]) != len(reports):
        raise ValueError(f"rounds_done {header['rounds_done']} but {len(reports)} reports")
    return Resumed(state, _unpack(s["client_buffers"], tensors), reports)
