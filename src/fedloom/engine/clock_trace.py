"""Client profiles for the virtual clock from a trace file (CSV or JSON).

Measured device traces (FedScale's, a fleet's telemetry) give each client's speed,
bandwidths and online windows; this module reads them into
:class:`~fedloom.engine.clock.ClientProfile` values, one per client in client-id order, and
rejects a malformed file with the line (CSV) or client index (JSON) and the field at fault.

CSV: a header naming ``speed``, ``down_bps``, ``up_bps``, optionally ``client`` (which must
then count 0, 1, 2, ... in order) and ``windows``: ``start-end`` pairs in seconds separated
by ``;`` (empty: always online)::

    client,speed,down_bps,up_bps,windows
    0,120.5,1e6,2.5e5,0-3600;7200-9000
    1,40,5e5,1e5,

JSON: ``{"period_s": 86400, "clients": [{"speed": 120.5, "down_bps": 1e6, "up_bps": 2.5e5,
"windows": [[0, 3600], [7200, 9000]]}, ...]}`` (or the bare list of clients); ``period_s``,
optional, repeats every client's windows with that period.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from fedloom.engine.clock import ClientProfile, Window, check_windows
from fedloom.errors import ConfigError

__all__ = ["load_trace"]

FIELDS = ("speed", "down_bps", "up_bps")


def load_trace(path: str | Path, *, num_clients: int | None = None) -> tuple[ClientProfile, ...]:
    """The profiles in the trace file ``path`` (``.csv`` or ``.json``), one per client.

    ``num_clients``: the population; a trace with fewer clients is an error (one with more
    is cut to the first ``num_clients``). Raises :class:`~fedloom.errors.ConfigError` naming
    the file, the line or client and the field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"clock trace {path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".csv":
        profiles = _from_csv(path, text)
    elif path.suffix.lower() == ".json":
        profiles = _from_json(path, text)
    else:
        raise ConfigError(f"clock trace {path}: the name must end in .csv or .json")
    if num_clients is not None:
        if len(profiles) < num_clients:
            raise ConfigError(
                f"clock trace {path}: it describes {len(profiles)} clients, the run has "
                f"{num_clients}; give one profile per client"
            )
        profiles = profiles[:num_clients]
    return profiles


def _number(value: Any, where: str, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {field} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{where}: {field} must be a finite number > 0, got {value!r}")
    return number


def _profile(
    row: dict[str, Any], windows: tuple[Window, ...], period: float | None, where: str
) -> ClientProfile:
    for field in FIELDS:
        if row.get(field) in (None, ""):
            raise ConfigError(f"{where}: {field} is missing")
    values = {field: _number(row[field], where, field) for field in FIELDS}
    problem = check_windows(windows, period)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    return ClientProfile(**values, windows=windows, period_s=period if windows else None)


def _from_csv(path: Path, text: str) -> tuple[ClientProfile, ...]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [f for f in FIELDS if f not in header]
    if missing:
        raise ConfigError(
            f"clock trace {path} line 1: the header lacks {', '.join(missing)} "
            f"(it needs {', '.join(FIELDS)}; client and windows are optional)"
        )
    profiles = []
    for index, row in enumerate(reader):
        where = f"clock trace {path} line {reader.line_num}"
        if None in row or any(v is None for v in row.values()):
            raise ConfigError(f"{where}: {len(header)} columns expected")
        if "client" in row and row["client"].strip() != str(index):
            raise ConfigError(
                f"{where}: client must be {index} (rows in client-id order), got {row['client']!r}"
            )
        windows = _csv_windows(row.get("windows") or "", where)
        profiles.append(_profile(row, windows, None, where))
    return tuple(profiles)


def _csv_windows(text: str, where: str) -> tuple[Window, ...]:
    windows = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        start, sep, end = part.partition("-")
        try:
            if not sep:
                raise ValueError
            windows.append((float(start), float(end)))
        except ValueError:
            raise ConfigError(
                f"{where}: windows must be start-end pairs separated by ';', got {part!r}"
            ) from None
    return tuple(windows)


def _from_json(path: Path, text: str) -> tuple[ClientProfile, ...]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"clock trace {path}: not valid JSON ({exc})") from None
    period = None
    if isinstance(raw, dict):
        if "period_s" in raw and raw["period_s"] is not None:
            period = _number(raw["period_s"], f"clock trace {path}", "period_s")
        raw = raw.get("clients")
    if not isinstance(raw, list):
        raise ConfigError(
            f"clock trace {path}: expected a list of clients (or {{'clients': [...]}})"
        )
    profiles = []
    for index, entry in enumerate(raw):
        where = f"clock trace {path} clients[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object with {', '.join(FIELDS)}")
        given = entry.get("windows") or []
        if not isinstance(given, list) or not all(
            isinstance(w, list) and len(w) == 2 and all(_is_number(v) for v in w) for w in given
        ):
            raise ConfigError(f"{where}: windows must be a list of [start, end] number pairs")
        windows = tuple((float(s), float(e)) for s, e in given)
        profiles.append(_profile(entry, windows, period, where))
    return tuple(profiles)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
