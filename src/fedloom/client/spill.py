"""The client-state store on disk, for populations whose state does not fit in memory.

SCAFFOLD keeps one model-sized ``c_k`` per client that ever took part: 100,000 clients of a
1.6M-parameter CNN are 640 GB. :class:`SpilledClientStates` keeps each client's entries in
its own safetensors file and only the most recently used ``cache_clients`` in memory, so the
server holds O(cohort) tensors, not O(population).

It is a value like the in-memory store (a ``Mapping`` from client id to entries): files are
never rewritten, a write makes a new file and a new store value, and the old value stays
readable. The files a version replaced are deleted when the *next* version is made, so the
previous round's state (the last checkpoint's) stays complete until a newer one exists. A
checkpoint records the folder and which file holds each client, not the tensors.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from fedloom.errors import FedloomError
from fedloom.storage import read_tensors, write_tensors

__all__ = ["SpilledClientStates"]

Entries = Mapping[str, torch.Tensor]


class _Cache:
    """Entries by file name, least recently used first out; shared by a store's versions
    (files never change, so an entry read by one version is valid for all)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: OrderedDict[str, Entries] = OrderedDict()

    def get(self, name: str, directory: Path) -> Entries:
        if name in self.items:
            self.items.move_to_end(name)
            return self.items[name]
        entries, _ = read_tensors(directory / name, what="client state file")
        self.put(name, entries)
        return entries

    def put(self, name: str, entries: Entries) -> None:
        self.items[name] = entries
        self.items.move_to_end(name)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


class SpilledClientStates(Mapping[int, Entries]):
    """Each client's entries in a file under ``directory``; at most ``cache_clients``
    clients' entries in memory."""

    def __init__(
        self,
        directory: str | Path,
        *,
        cache_clients: int = 1024,
        _index: Mapping[int, str] | None = None,
        _cache: _Cache | None = None,
        _retired: tuple[str, ...] = (),
        _fresh: tuple[str, ...] = (),
    ):
        if cache_clients < 1:
            raise ValueError(f"cache_clients must be >= 1, got {cache_clients}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cache_clients = cache_clients
        self._index = dict(_index or {})
        self._cache = _cache or _Cache(cache_clients)
        self._retired = _retired  # files this version replaced: deleted by the next one
        self._fresh = _fresh  # files this version wrote: synced before a checkpoint

    def __getitem__(self, client: int) -> Entries:
        return self._cache.get(self._index[client], self.directory)

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def resident(self) -> int:
        """How many clients' entries are in memory now."""
        return len(self._cache.items)

    def with_writes(self, writes: Mapping[int, Entries]) -> SpilledClientStates:
        """A new store value with ``writes`` merged in (see :func:`~fedloom.client.store.with_writes`)."""
        for name in self._retired:
            (self.directory / name).unlink(missing_ok=True)
        index, retired, fresh = dict(self._index), [], []
        for client, entries in writes.items():
            merged = {**self.get(client, {}), **entries}
            name = f"{client}-{uuid.uuid4().hex[:12]}.safetensors"
            write_tensors(self.directory / name, merged, durable=False)
            self._cache.put(name, merged)
            if client in index:
                retired.append(index[client])
            index[client] = name
            fresh.append(name)
        return SpilledClientStates(
            self.directory,
            cache_clients=self.cache_clients,
            _index=index,
            _cache=self._cache,
            _retired=tuple(retired),
            _fresh=tuple(fresh),
        )

    def reference(self) -> dict[str, object]:
        """What a checkpoint stores: the folder and each client's file (after syncing the
        files this version wrote, so the checkpoint never names a file that is not on disk)."""
        for name in self._fresh:
            with (self.directory / name).open("rb") as f:
                os.fsync(f.fileno())
        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        return {
            "directory": str(self.directory),
            "cache_clients": self.cache_clients,
            "index": {str(client): name for client, name in self._index.items()},
        }

    @classmethod
    def restore(cls, reference: Mapping[str, object]) -> SpilledClientStates:
        """The store a checkpoint refers to; files no version of it names (written after
        that checkpoint by a run that then died) are removed."""
        index = {int(k): str(v) for k, v in dict(reference["index"]).items()}  # type: ignore[call-overload]
        store = cls(
            str(reference["directory"]),
            cache_clients=int(reference["cache_clients"]),  # type: ignore[call-overload]
            _index=index,
        )
        named = set(index.values())
        for path in store.directory.glob("*.safetensors"):
            if path.name not in named:
                path.unlink()
        missing = [name for name in named if not (store.directory / name).exists()]
        if missing:
            raise FedloomError(
                f"the checkpoint's client state in {store.directory} is incomplete "
                f"({len(missing)} files missing, e.g. {missing[0]}); restore the folder or "
                "delete the checkpoint to start over"
            )
        return store
