"""Registry-backed config fields: a name (or a mapping with one) becomes its entry's section."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedloom.registry import REGISTRY, TAGS

__all__ = ["dispatch", "registry_field"]


def registry_field(kind: str, default: Any, description: str) -> Any:
    """A pydantic field whose value is validated by the section of the entry it names;
    ``default`` is a section instance, whose name is also what a mapping without one means."""
    name = getattr(default, TAGS.get(kind, "name"))
    return Field(
        default=default,
        description=description,
        json_schema_extra={"registry": kind, "default": name},
    )


def dispatch(kind: str, value: Any, *, default: str) -> Any:
    """Validate ``value`` (a name, or a mapping naming an entry) with its entry's section.

    A mapping without the tag means the ``default`` entry (``{alpha: 0.1}`` under
    ``data.partition`` is the default Dirichlet partition's own key). An unknown name is a
    ``ValueError`` listing the registered ones, which the config reports for that field.
    """
    tag = TAGS.get(kind, "name")
    if isinstance(value, str):
        value = {tag: value}
    if not isinstance(value, dict):
        return value
    name = value.get(tag, default)
    try:
        entry = REGISTRY.entry(kind, str(name))
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return entry.section.model_validate({**value, tag: name})
