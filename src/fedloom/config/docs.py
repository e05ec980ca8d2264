"""Documentation generated from the registry, so help texts and the README never drift.

``python -m fedloom.config.docs`` prints the README's table of registered names; a test
checks that the README holds exactly this table (and that ``fedloom run --help`` names every
entry).
"""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from fedloom.registry import KINDS, REGISTRY, Entry

__all__ = ["registry_table"]


def _options(entry: Entry) -> str:
    options = entry.options()
    shown = [
        f"`{k}` (required)" if v is PydanticUndefined else f"`{k}` = {v!r}"
        for k, v in options.items()
    ]
    return ", ".join(shown)


def _key(kind: str) -> str:
    return {
        "algorithm": "algorithm",
        "aggregator": "server.aggregator",
        "partition": "data.partition",
        "model": "model.name",
        "task": "task",
        "engine": "engine",
    }[kind]


def registry_table() -> str:
    """A Markdown table of every registered name: config key, name, options, summary."""
    rows = ["| config key | name | options (defaults) | what it is |", "|---|---|---|---|"]
    for kind in KINDS:
        for entry in REGISTRY.entries(kind):
            summary = entry.summary.replace("``", "`").replace("|", "\\|")
            options = _options(entry).replace("|", "\\|")
            rows.append(f"| {_key(kind)} | `{entry.name}` | {options} | {summary} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import fedloom.config  # noqa: F401  (registers the built-in entries, engines too)

    print(registry_table(), end="")
