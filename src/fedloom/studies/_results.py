"""What every study shares: where results go and how they are written."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fedloom.algorithms import ServerState
from fedloom.engine import Callback
from fedloom.report.machine import cpu_name
from fedloom.types import RoundReport

__all__ = ["ParamsTrace", "json_safe", "provenance", "rounded", "write_results"]


class ParamsTrace(Callback):
    """Keeps a copy of the global parameters after every round (small models only)."""

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        self.params = [state.params.clone()]

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        self.params.append(state.params.clone())


def provenance() -> dict[str, Any]:
    """Where and how a result was made: the command, the date (UTC), the machine and the
    versions that matter (torch, numpy, dp-accounting, fedloom)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy

    import fedloom

    cpu = cpu_name()
    try:
        dp_accounting = version("dp-accounting")
    except PackageNotFoundError:
        dp_accounting = None
    return {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "dp_accounting": dp_accounting,
            "fedloom": fedloom.__version__,
            "platform": platform.platform(),
        },
    }


def write_results(out_dir: Path | None, name: str, results: dict[str, Any]) -> Path | None:
    """Write ``results.json`` of a study into ``out_dir`` (created), with its
    :func:`provenance`; nothing when ``None``."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps({"study": name, **results, "provenance": provenance()}, indent=2))
    return path


def json_safe(value: Any) -> Any:
    """``value`` with every infinite float as the string ``"inf"`` or ``"-inf"`` (JSON has no
    infinity; a DP run without noise has epsilon ``inf``), through dicts, lists and tuples."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def rounded(values: Sequence[float], digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in values]
