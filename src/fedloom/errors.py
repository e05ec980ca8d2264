"""The one exception hierarchy of fedloom.

Every error fedloom raises on purpose is a :class:`FedloomError`, so callers can catch the
project's failures without catching programming mistakes. Messages say what failed, the value
seen and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "ConfigError",
    "DataError",
    "DataMissing",
    "FedloomError",
    "RoundAborted",
    "StageError",
]


class FedloomError(Exception):
    """Root of every error fedloom raises deliberately."""


class ConfigError(FedloomError, ValueError):
    """A run configuration is invalid. One line per problem, each naming the field."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(FedloomError):
    """A dataset is missing, malformed, or cannot be partitioned as asked."""


class DataMissing(DataError):
    """A dataset's files are not on disk and could not be downloaded (offline, or no source
    to download from). The message names the files and the folder they belong in; the config
    turns it into a ``data.root`` error, while a present but corrupt file stays a plain
    :class:`DataError` (the folder is right, the file is not)."""


class ClientError(FedloomError):
    """A client failed during a round and the run was told to stop at the first failure
    (``server.on_client_error: abort``). ``client_id``, ``round`` (1-based, as logged) and
    ``reason`` say which client, when and why."""

    def __init__(self, message: str, *, client_id: int, round: int, reason: str):
        super().__init__(message)
        self.client_id, self.round, self.reason = client_id, round, reason


class StageError(FedloomError, ValueError):
    """An aggregation stage (a plugin of the pipeline) returned something the next stage
    cannot use: the message names the stage, what was expected and what it returned. Raised
    before the server state changes, so the round can be retried with a fixed stage."""


class RoundAborted(FedloomError):
    """A round's aggregation cannot finish, by design rather than by a bug: secure
    aggregation with more dropouts than its threshold tolerates. The round loop skips the
    round (the model and the pipeline state stay as they were, ``round_skipped`` is 1) and
    logs ``reason``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
