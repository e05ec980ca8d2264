"""Data files on disk: find them, download them once into the cache, check their SHA-256.

The loaders of published data sets (:mod:`fedloom.data.vision`) share one policy, the one
:mod:`fedloom.data.mnist` started:

- files live under ``<root>/<data set>/`` (``root`` defaults to :func:`default_data_root`);
- a missing file is downloaded when the machine is online, to a ``.part`` file that becomes
  the real name only after its SHA-256 matched the published digest;
- a file already there is checked against the same digest (``verify=False`` skips that, for
  files you made yourself: a subset, a recompression), and every reader also checks the
  file's structure, so a corrupt or truncated file is refused with an error naming it;
- offline, the error (:class:`~fedloom.errors.DataMissing`) names the files, the folder and
  where to get them.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedloom.data.mnist import default_data_root
from fedloom.errors import DataError, DataMissing

__all__ = ["Remote", "check_sha256", "data_folder", "fetch", "sha256_of"]


@dataclass(frozen=True)
class Remote:
    """A published file: its name, where it can be downloaded, and its SHA-256 (empty when
    none is published: the file's contents are then checked another way)."""

    name: str
    urls: tuple[str, ...]
    sha256: str


def data_folder(root: str | Path | None, name: str) -> Path:
    """``<root>/<name>``, ``root`` defaulting to :func:`default_data_root`."""
    return Path(root if root is not None else default_data_root()).expanduser() / name


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Refuse ``path`` unless its SHA-256 is ``expected``."""
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or not the published file: its SHA-256 is {actual}, expected "
            f"{expected}. Delete it to download it again, or pass verify=False (data.verify: "
            "false) if you made the file yourself."
        )


def fetch(
    folder: Path,
    remote: Remote,
    *,
    what: str,
    download: bool,
    verify: bool,
    siblings: Sequence[str] = (),
    hint: str = "",
) -> Path:
    """``folder / remote.name``, downloaded first if it is missing, checked if ``verify``.

    ``what`` names the data set in messages; ``siblings`` lists every file of the set, so
    the offline message names them all; ``hint`` adds another way to provide them."""
    target = folder / remote.name
    if target.exists():
        if verify and remote.sha256:
            check_sha256(target, remote.sha256)
        return target
    names = ", ".join(siblings or (remote.name,))
    where = f"Put {names}{hint} in {folder} (or point data.root / FEDLOOM_DATA at another root)."
    if not download:
        raise DataMissing(f"{what} file {remote.name} not found in {folder}. {where}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataMissing(
            f"{what} file {remote.name} is not in {folder}, and that folder cannot be created "
            f"to download it ({exc.strerror or exc}). {where}"
        ) from None
    errors = []
    partial = folder / f"{remote.name}.part"
    for url in remote.urls:
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
            if remote.sha256:  # validate before trusting it
                check_sha256(partial, remote.sha256)
            return partial.rename(target)
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{url}: {exc}")
            partial.unlink(missing_ok=True)
    raise DataMissing(
        f"{what} file {remote.name} is not in {folder} and could not be downloaded "
        f"({'; '.join(errors)}). {where}"
    )
