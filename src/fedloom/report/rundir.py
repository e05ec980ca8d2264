"""The run directory: ``runs/<name>/`` with the resolved config, metrics, model and plots."""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from fedloom.errors import ConfigError
from fedloom.model_file import save_model

__all__ = ["check_runs_dir", "create_run_dir", "save_model"]


def check_runs_dir(runs_dir: str | Path) -> None:
    """Raise :class:`ConfigError` naming ``output.runs_dir`` if run directories cannot be
    made in ``runs_dir``; creates nothing.

    Called before any data is loaded or model built, so that a path under a regular file or
    in a read-only folder is one line at once rather than a ``FileNotFoundError`` or
    ``PermissionError`` traceback after the data has been loaded. The folder need not exist
    yet: its nearest existing ancestor must be a folder this process may write into.
    """
    root = Path(runs_dir)
    existing = root
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # a name too long for the file system, say
        raise ConfigError(
            f"output.runs_dir: {runs_dir} is not a usable path ({exc.strerror or exc}); give "
            "a folder (--runs-dir DIR)"
        ) from None
    if existing.exists() and not existing.is_dir():
        where = "is" if existing == root else f"is under {existing}, which is"
        raise ConfigError(
            f"output.runs_dir: {runs_dir} {where} a file, not a folder; give a folder "
            "(--runs-dir DIR)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == root else f" (its nearest existing folder {existing})"
        raise ConfigError(
            f"output.runs_dir: {runs_dir}{where} is not writable; give a folder you can "
            "write to (--runs-dir DIR)"
        )


def create_run_dir(runs_dir: str | Path, name: str | None, *, default_stem: str) -> Path:
    """A new, empty run directory. ``name`` defaults to ``<default_stem>-<timestamp>``;
    an existing name gets a ``-2``, ``-3``... suffix rather than being overwritten.

    Failures to create it are :class:`ConfigError`\\ s naming ``output.runs_dir`` (the
    folder itself) or ``name`` (the run's own folder in it), never an ``OSError``.
    """
    stem = name or f"{default_stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output.runs_dir: cannot create {runs_dir} ({exc.strerror or exc}); give a folder "
            "you can write to (--runs-dir DIR)"
        ) from None
    candidate, suffix = root / stem, 1
    try:
        while candidate.exists():
            suffix += 1
            candidate = root / f"{stem}-{suffix}"
        candidate.mkdir()
    except OSError as exc:
        raise ConfigError(
            f"name: cannot create the run directory {candidate} ({exc.strerror or exc})"
        ) from None
    return candidate
