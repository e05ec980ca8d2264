"""Values that travel: objects described by data (a name, numbers, tensors).

A deployed client must build exactly the objective a simulated one does, transform its
update exactly as a simulated one does (local DP's clip and noise), and run exactly the
client half of an algorithm's state logic (SCAFFOLD's ``c_k`` update) that the simulation runs
on the server. None of them may be pickled across the network. So every local-objective term
(:class:`~fedloom.client.terms.ProximalTerm`, the linear term carrying SCAFFOLD's and FedDyn's
gradient corrections, a user's own term), every update transform and every algorithm state
logic is a frozen dataclass
whose fields are numbers and tensors, registered under a name with :func:`portable`. The
server sends :func:`describe`'s :class:`Description`; the client calls :func:`rebuild` and
gets an equal object, from code it has installed itself.

>>> from dataclasses import dataclass
>>> @portable("doc/scaled")
... @dataclass(frozen=True)
... class Scaled:
...     factor: float
...     steps: int
>>> describe(Scaled(0.5, 3))
Description(name='doc/scaled', numbers={'factor': 0.5, 'steps': 3.0}, tensors={})
>>> rebuild(describe(Scaled(0.5, 3)))
Scaled(factor=0.5, steps=3)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

import torch

from fedloom.errors import FedloomError

__all__ = ["Description", "describe", "portable", "portable_names", "rebuild"]

T = TypeVar("T")

_KINDS: dict[str, type] = {}

# Modules that register the built-in portable values; imported on a miss, so that a client
# that received a name before importing the module defining it still finds it.
_BUILT_IN_MODULES = (
    "fedloom.client.terms",
    "fedloom.algorithms",
    "fedloom.privacy.local_dp",
    "fedloom.compress",
)

_CASTS: dict[str, Callable[[float], Any]] = {"int": int, "bool": bool, "float": float}


@dataclass(frozen=True)
class Description:
    """A portable value as data: its registered ``name``, its number fields and its tensor
    fields (the wire form in ``fedloom.proto`` is the message ``Portable``)."""

    name: str
    numbers: Mapping[str, float] = field(default_factory=dict)
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)


def portable(name: str) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass of numbers and tensors under ``name`` (a class
    decorator). Registering the same class again is harmless; another class under a taken
    name is an error."""

    def register(cls: type[T]) -> type[T]:
        if not is_dataclass(cls):
            raise TypeError(f"@portable({name!r}): {cls.__name__} must be a dataclass")
        known = _KINDS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"@portable({name!r}): the name is taken by {known.__module__}.{known.__qualname__}"
            )
        _KINDS[name] = cls
        cls.portable_name = name  # type: ignore[attr-defined]
        return cls

    return register


def portable_names() -> tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(_KINDS))


def describe(value: object) -> Description:
    """``value`` as data; a clear error when it is not a registered portable value."""
    name = getattr(type(value), "portable_name", None)
    if name is None or _KINDS.get(name) is not type(value) or not is_dataclass(value):
        raise FedloomError(
            f"{type(value).__name__} cannot travel to deployed clients: make it a frozen "
            "dataclass of numbers and tensors and register it with "
            "@fedloom.client.portable.portable('<name>')"
        )
    numbers: dict[str, float] = {}
    tensors: dict[str, torch.Tensor] = {}
    for spec in fields(value):
        item = getattr(value, spec.name)
        if isinstance(item, torch.Tensor):
            tensors[spec.name] = item
        elif isinstance(item, bool | int | float):
            numbers[spec.name] = float(item)
        else:
            raise FedloomError(
                f"{type(value).__name__}.{spec.name} is a {type(item).__name__}: a portable "
                "value's fields must be numbers or tensors"
            )
    return Description(name, numbers, tensors)


def rebuild(description: Description) -> Any:
    """The value ``description`` describes, built by the locally installed class."""
    cls = _lookup(description.name)
    specs = {spec.name: spec for spec in fields(cls)}
    given = set(description.numbers) | set(description.tensors)
    if given != set(specs):
        raise FedloomError(
            f"portable {description.name!r}: got fields {sorted(given)}, the installed "
            f"{cls.__name__} has {sorted(specs)}: client and server run different versions"
        )
    kwargs: dict[str, Any] = dict(description.tensors)
    for key, number in description.numbers.items():
        annotation = specs[key].type  # a string under postponed annotations, else the class
        cast = _CASTS.get(getattr(annotation, "__name__", str(annotation)), float)
        kwargs[key] = cast(number)
    return cls(**kwargs)


def _lookup(name: str) -> type:
    if name not in _KINDS:
        for module in _BUILT_IN_MODULES:
            importlib.import_module(module)
    if name not in _KINDS:
        raise FedloomError(
            f"the server sent {name!r}, which this client does not know (known: "
            f"{', '.join(portable_names())}); install and import the plugin that defines it"
        )
    return _KINDS[name]
