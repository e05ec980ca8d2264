"""Pydantic's validation errors turned into one line per field, naming what is allowed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel

from fedloom.registry import REGISTRY, TAGS

__all__ = ["describe_errors", "registry_kind", "section_at"]


def registry_kind(model: type[BaseModel], field: str) -> tuple[str, str] | None:
    """``(kind, default name)`` of a registry-backed field (``algorithm``, ``partition``...)."""
    info = model.model_fields.get(field)
    extra = info.json_schema_extra if info is not None else None
    if isinstance(extra, dict) and "registry" in extra:
        return str(extra["registry"]), str(extra.get("default", ""))
    return None


def section_at(root: type[BaseModel], path: Iterable[Any], raw: Any) -> type[BaseModel] | None:
    """The config section class at a location of the raw config, if there is one.

    Registry-backed fields (an algorithm, a partition, an aggregation rule) resolve to the
    section of the entry that the raw config names there.
    """
    model: type[BaseModel] | None = root
    node = raw
    pending: tuple[str, str] | None = None  # a registry-backed list whose item comes next
    for part in path:
        if model is None:
            return None
        node = node[part] if isinstance(node, Mapping | list) and _has(node, part) else None
        backed = pending if isinstance(part, int) else registry_kind(model, part)
        pending = None
        if isinstance(part, int) and backed is None:
            continue  # an item of a plain list
        if backed is not None:
            if isinstance(node, list):
                pending = backed  # the entry is named by the list's item
                continue
            kind, default = backed
            tag = TAGS.get(kind, "name")
            name = node.get(tag, default) if isinstance(node, Mapping) else node
            try:
                model = REGISTRY.entry(kind, str(name)).section
            except KeyError:
                return None
            continue
        info = model.model_fields.get(str(part))
        model = _section_type(info.annotation) if info is not None else None
    return model


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section class of a field's annotation, looking inside ``X | None``."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return part in node


def describe_errors(errors: Sequence[Any], root: type[BaseModel], raw: Any) -> list[str]:
    """One line per field: the alternatives of a union (``int | "full"``) become one line."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        where, message = _describe(error, root, raw)
        lines.setdefault(where, []).append(message)
    return [f"{where}: {'; or '.join(messages)}" for where, messages in lines.items()]


def _describe(error: Any, root: type[BaseModel], raw: Any) -> tuple[str, str]:
    kind = error["type"]
    # Union members add locations such as 'constrained-int' or "literal['full']": not fields.
    # An unknown key is the last location, whatever it looks like ('batch-size'): kept.
    raw_loc = tuple(error["loc"])
    key = raw_loc[-1:] if kind == "extra_forbidden" else ()
    loc = (*_fields(raw_loc[: len(raw_loc) - len(key)]), *key)
    where = ".".join(str(p) for p in loc) or "config"
    if kind == "extra_forbidden":
        section = section_at(root, loc[:-1], raw)
        allowed = ", ".join(section.model_fields) if section else "see `fedloom run --help`"
        return where, f"unknown key; allowed keys here: {allowed}"
    if kind == "value_error" and "ctx" in error:
        return where, str(error["ctx"]["error"])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return where, error["msg"]
    return where, f"{error['msg']} (got {error.get('input')!r})"


def _fields(loc: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(p for p in loc if isinstance(p, int) or str(p).isidentifier())
