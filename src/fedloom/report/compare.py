"""Compare finished runs: a table for the terminal (``fedloom compare``) and one
self-contained HTML page (``fedloom report``).

A run is read back from its directory (``config.yaml``, ``metrics.jsonl`` and, when the run
finished, ``summary.json``), so any runs can be compared later, whichever engine or
machine produced them: simulated and deployed runs alike. The page embeds its figures as
PNG data, so it can be mailed or archived as one file; every string from a run is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from fedloom.errors import FedloomError
from fedloom.report.metrics import read_metrics

__all__ = [
    "FINAL_COLUMNS",
    "RunRecord",
    "comparison_table",
    "config_differences",
    "final_metrics",
    "load_runs",
    "score_of",
    "write_report",
]

IGNORED_CONFIG = ("output.", "name")
"""Config keys that say where a run wrote, not what it did: left out of the differences."""


@dataclass(frozen=True)
class RunRecord:
    """One finished (or interrupted) run, as read from its directory."""

    name: str
    path: Path
    config: dict[str, Any]
    records: list[dict[str, float]]
    summary: dict[str, Any]


def load_runs(paths: Sequence[Path]) -> list[RunRecord]:
    """Read each run directory; a folder that is not one is an error naming it."""
    runs = []
    for path in paths:
        metrics = path / "metrics.jsonl"
        if not metrics.is_file():
            raise FedloomError(
                f"{path} is not a run directory (no metrics.jsonl); give folders that "
                "`fedloom run` or `fedloom server` wrote"
            )
        try:
            records = read_metrics(path)
            config_file = path / "config.yaml"
            config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
            summary_file = path / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        except (ValueError, yaml.YAMLError) as exc:
            raise FedloomError(f"{path}: a damaged run file ({exc})") from None
        runs.append(RunRecord(path.name, path, config or {}, records, summary))
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # same folder names under different parents
        runs = [RunRecord(str(r.path), r.path, r.config, r.records, r.summary) for r in runs]
    return runs


def score_of(runs: Sequence[RunRecord]) -> str:
    """The task's score the runs report: ``accuracy`` when they have it, else the first
    ``test_<metric>`` that is not the loss."""
    keys = {key for run in runs for record in run.records for key in record}
    if "test_accuracy" in keys:
        return "accuracy"
    scores = sorted(k[5:] for k in keys if k.startswith("test_") and k != "test_loss")
    return scores[0] if scores else "loss"


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(runs: Sequence[RunRecord]) -> list[tuple[str, list[Any]]]:
    """The resolved-config keys whose values differ between the runs, with each run's value
    (``None`` where a run's config lacks the key)."""
    flat = [_flatten(run.config) for run in runs]
    keys = sorted({key for config in flat for key in config})
    differing = []
    for key in keys:
        if key.startswith(IGNORED_CONFIG):
            continue
        values = [config.get(key) for config in flat]
        if any(value != values[0] for value in values[1:]):
            differing.append((key, values))
    return differing


def _last(records: Sequence[dict], key: str) -> float | None:
    for record in reversed(records):
        if record.get(key) is not None:
            return float(record[key])
    return None


FINAL_COLUMNS = (
    ("rounds", "d"),
    ("final test {score}", ".4f"),
    ("best test {score}", ".4f"),
    ("final test loss", ".4f"),
    ("client {score} mean", ".4f"),
    ("client {score} worst 10%", ".4f"),
    ("epsilon", ".3f"),
    ("MB down + up", ",.1f"),
    ("wall s", ",.1f"),
)
"""The comparison's columns and their formats (``{score}`` is the task's score)."""


def final_metrics(run: RunRecord, score: str) -> list[float | None]:
    """One row of :data:`FINAL_COLUMNS` for ``run``."""
    records = run.records
    values = [r[f"test_{score}"] for r in records if r.get(f"test_{score}") is not None]
    lower_is_better = score in ("loss", "error", "perplexity") or score.endswith("_error")
    best = (min if lower_is_better else max)(values) if values else None
    traffic = sum(r.get("bytes_down", 0.0) + r.get("bytes_up", 0.0) for r in records)
    return [
        float(len(records)),
        _last(records, f"test_{score}"),
        best,
        _last(records, "test_loss"),
        _last(records, f"client_{score}_mean"),
        _last(records, f"client_{score}_worst10"),
        _last(records, "dp_epsilon"),
        traffic / 1e6,
        sum(r.get("wall_s", 0.0) for r in records),
    ]


def _cell(value: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    return format(int(value), fmt) if fmt == "d" else format(value, fmt)


def comparison_table(runs: Sequence[RunRecord]) -> Table:
    """The terminal table: one column per run, a row per final metric, then a row per
    config key that differs (runs are few, metrics many: this way it fits a terminal)."""
    score = score_of(runs)
    table = Table(title="runs compared", header_style="bold")
    table.add_column("metric")
    for run in runs:
        table.add_column(run.name, justify="right", overflow="fold")
    rows = [final_metrics(run, score) for run in runs]
    for i, (label, fmt) in enumerate(FINAL_COLUMNS):
        table.add_row(label.format(score=score.replace("_", " ")),
                      *(_cell(row[i], fmt) for row in rows))  # fmt: skip
    differences = config_differences(runs)
    if differences:
        table.add_section()
    for key, values in differences:
        table.add_row(key, *(str(value) for value in values))
    return table


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(runs: Sequence[RunRecord], score: str) -> list[tuple[str, str]]:
    """(title, base64 PNG) of each figure of the page."""
    from fedloom.report.plots import _pyplot

    plt = _pyplot()
    key = f"test_{score}"
    label = score.replace("_", " ")
    out = []
    axes_of = (
        ("round", lambda records: [r["round"] for r in records]),
        (
            "MB sent (down + up)",
            lambda records: _cumulative(records, ("bytes_down", "bytes_up"), 1e-6),
        ),  # fmt: skip
        ("wall seconds", lambda records: _cumulative(records, ("wall_s",), 1.0)),
    )
    for x_label, x_of in axes_of:
        figure, ax = plt.subplots(figsize=(7, 4))
        for run in runs:
            xs = x_of(run.records)
            points = [(x, r[key]) for x, r in zip(xs, run.records, strict=True)
                      if r.get(key) is not None]  # fmt: skip
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=run.name)
        ax.set(xlabel=x_label, ylabel=f"test {label}", title=f"test {label} vs {x_label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        out.append((f"test {label} vs {x_label}", _png(figure)))
        plt.close(figure)
    client = f"client_{score}"
    if any(r.get(f"{client}_mean") is not None for run in runs for r in run.records):
        figure, ax = plt.subplots(figsize=(7, 4))
        for run in runs:
            rows = [r for r in run.records if r.get(f"{client}_mean") is not None]
            if not rows:
                continue
            rounds = [r["round"] for r in rows]
            (line,) = ax.plot(rounds, [r[f"{client}_mean"] for r in rows], label=run.name)
            ax.fill_between(rounds, [r[f"{client}_worst10"] for r in rows],
                            [r[f"{client}_best10"] for r in rows], alpha=0.2,
                            color=line.get_color())  # fmt: skip
        ax.set(xlabel="round", ylabel=f"client {label}",
               title=f"per-client {label}: mean, band from worst to best 10%")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        out.append((f"per-client {label}", _png(figure)))
        plt.close(figure)
    return out


def _cumulative(records: Sequence[dict], keys: tuple[str, ...], scale: float) -> list[float]:
    total, out = 0.0, []
    for record in records:
        total += sum(float(record.get(k) or 0.0) for k in keys) * scale
        out.append(total)
    return out


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(runs: Sequence[RunRecord], out: Path, *, title: str = "fedloom runs") -> Path:
    """Write the HTML page comparing ``runs`` to ``out`` and return its path."""
    score = score_of(runs)
    label = score.replace("_", " ")
    header = ["run", *(name.format(score=label) for name, _ in FINAL_COLUMNS)]
    rows = [
        [run.name, *(_cell(v, f) for v, (_, f) in
                     zip(final_metrics(run, score), FINAL_COLUMNS, strict=True))]
        for run in runs
    ]  # fmt: skip
    differences = config_differences(runs)
    difference_rows = [[key, *(json.dumps(v) for v in values)] for key, values in differences]
    figures = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, data in _figures(runs, score)
    )
    sources = "".join(f"<li>{html.escape(run.name)}: {html.escape(str(run.path))}</li>"
                      for run in runs)  # fmt: skip
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<h2>Final metrics</h2>{_html_table(header, rows)}"
        f"<h2>Curves</h2>{figures}"
        "<h2>Config differences</h2>"
        + (
            _html_table(["key", *(run.name for run in runs)], difference_rows)
            if difference_rows
            else "<p>The runs' resolved configs are the same (outputs aside).</p>"
        )
        + f"<h2>Runs</h2><ul>{sources}</ul></body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
