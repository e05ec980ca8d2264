"""One table from names to config sections and factories: how a new idea becomes one file.

Every name a config may hold (an algorithm, an aggregation rule, a partition, a model, a
task) is an :class:`Entry` of :data:`REGISTRY`: its kind, its name, the pydantic section
that validates its options, and the factory that builds the object. Config validation,
``fedloom run --help``, the README's key table and the error for an unknown name all read
this table, so registering an entry is all it takes to make it usable from YAML:

>>> from fedloom.registry import REGISTRY
>>> "fedavg" in REGISTRY.names("algorithm")
True

A factory's own signature can serve as its section: :func:`section_from_factory` turns
keyword parameters with defaults (and ``Annotated`` constraints) into a pydantic model, so
an algorithm written as ``def feddyn(alpha: float = 0.01, *, server_lr=1.0, weighting=...)``
registers with one line (see ``examples/custom_algorithm.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

__all__ = [
    "KINDS",
    "REGISTRY",
    "Entry",
    "Kinded",
    "Named",
    "Registry",
    "Section",
    "base_section",
    "section_from_factory",
]

KINDS = ("algorithm", "aggregator", "partition", "model", "task", "engine")
"""What the registry names; each kind's entries are told apart by the key :data:`TAGS` gives."""

TAGS = {"partition": "kind"}
"""The field that names the entry in a section (``name`` unless listed here)."""


class Section(BaseModel):
    """A config section: unknown keys are errors, values are immutable, and no number may be
    infinite or NaN (``.inf`` passed every lower bound and reached training as NaN)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Named(Section):
    """The section of a registered entry, told apart by its ``name``."""

    name: str


class Kinded(Section):
    """The section of a registered partition, told apart by its ``kind``."""

    kind: str


def base_section(kind: str) -> type[Section]:
    """The base class of the sections of ``kind``'s entries."""
    return Kinded if TAGS.get(kind, "name") == "kind" else Named


@dataclass(frozen=True)
class Entry:
    """A registered name: ``section`` validates its options, ``factory`` builds it.

    ``server_options`` lists the factory's parameters that come from the ``server`` section
    rather than the entry's own (an algorithm's ``server_lr`` and ``weighting``).
    """

    kind: str
    name: str
    section: type[Section]
    factory: Callable[..., Any]
    server_options: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """The first line of the section's (or factory's) docstring, for help texts."""
        doc = self.section.__doc__ or self.factory.__doc__ or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def default(self, option: str) -> Any:
        """The factory's default for ``option`` (e.g. an algorithm's server learning rate)."""
        parameter = inspect.signature(self.factory).parameters.get(option)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return None
        return parameter.default

    def options(self) -> dict[str, Any]:
        """The entry's own options and their defaults (the section's fields but the tag)."""
        tag = TAGS.get(self.kind, "name")
        return {n: f.default for n, f in self.section.model_fields.items() if n != tag}


class Registry:
    """Entries by kind and name. Registering a taken name is an error unless ``replace``."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        section: type[Section] | None = None,
        server_options: Iterable[str] = (),
        replace: bool = False,
    ) -> Entry:
        """Add ``name`` to ``kind``; without a ``section`` one is made from the factory."""
        if kind not in self._entries:
            raise ValueError(f"unknown registry kind {kind!r}; kinds: {', '.join(KINDS)}")
        if name in self._entries[kind] and not replace:
            raise ValueError(
                f"{kind} {name!r} is already registered; pass replace=True to override it"
            )
        server_options = tuple(server_options)
        if section is None:
            section = section_from_factory(kind, name, factory, exclude=server_options)
        entry = Entry(kind, name, section, factory, server_options)
        self._entries[kind][name] = entry
        return entry

    def unregister(self, kind: str, name: str) -> None:
        """Remove ``name`` from ``kind`` (tests and notebooks that register temporarily)."""
        self.entry(kind, name)
        del self._entries[kind][name]

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            raise KeyError(
                f"unknown {kind} {name!r}; registered: {', '.join(self.names(kind))}"
            ) from None

    def names(self, kind: str) -> tuple[str, ...]:
        return tuple(self._entries[kind])

    def entries(self, kind: str) -> tuple[Entry, ...]:
        return tuple(self._entries[kind].values())


def section_from_factory(
    kind: str, name: str, factory: Callable[..., Any], *, exclude: Iterable[str] = ()
) -> type[Section]:
    """A config section whose fields are ``factory``'s parameters with defaults.

    Annotations (including ``Annotated[float, annotated_types.Ge(0)]`` constraints) become
    the fields' types; ``exclude`` names parameters set elsewhere. A parameter without a
    default is required in the config.
    """
    fields: dict[str, Any] = {TAGS.get(kind, "name"): (Literal[name], name)}
    hints = inspect.get_annotations(factory, eval_str=True)
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.name in exclude or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model = create_model(
        f"{name.title().replace('_', '')}Config", __base__=base_section(kind), **fields
    )
    model.__doc__ = (factory.__doc__ or name).strip().splitlines()[0]
    return model


REGISTRY = Registry()
"""The registry that configs read. Built-in entries are added by :mod:`fedloom.config`."""
