"""What every study shares: where results go and how they are written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fedloom.algorithms import ServerState
from fedloom.engine import Callback
from fedloom.types import RoundReport

__all__ = ["ParamsTrace", "rounded", "write_results"]


class ParamsTrace(Callback):
    """Keeps a copy of the global parameters after every round (small models only)."""

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        self.params = [state.params.clone()]

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        self.params.append(state.params.clone())


def write_results(out_dir: Path | None, name: str, results: dict[str, Any]) -> Path | None:
    """Write ``results.json`` of a study into ``out_dir`` (created); nothing when ``None``."""
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    path.write_text(json.dumps({"study": name, **results}, indent=2))
    return path


def rounded(values: Sequence[float], digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in values]
