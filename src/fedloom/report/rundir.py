"""The run directory: ``runs/<name>/`` with the resolved config, metrics, model and plots."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from fedloom.model_file import save_model

__all__ = ["create_run_dir", "save_model"]


def create_run_dir(runs_dir: str | Path, name: str | None, *, default_stem: str) -> Path:
    """A new, empty run directory. ``name`` defaults to ``<default_stem>-<timestamp>``;
    an existing name gets a ``-2``, ``-3``... suffix rather than being overwritten."""
    stem = name or f"{default_stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    root = Path(runs_dir)
    candidate, suffix = root / stem, 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{stem}-{suffix}"
    candidate.mkdir(parents=True)
    return candidate
