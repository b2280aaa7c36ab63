"""The exception tree of cicd.

Every error cicd raises on purpose derives from :class:`CicdError`, carries a
stable ``code`` (the catalogue the API will return) and a message that names the
value that failed and what to do about it::

    CicdError
    ├── PipelineError          the pipeline file is invalid (code PIPELINE-INVALID)
    ├── UsageError             a command-line argument is invalid (code USAGE)
    │   └── IdempotencyMismatch  a reused idempotency key with another request
    ├── StorageError           the SQLite database cannot be used (code ORC-INFRA)
    │   └── SchemaTooNewError  the database was written by a newer cicd
    ├── ProviderError          a worker provider failed (code WKM-PROV)
    │   ├── EngineUnavailable  no Docker engine answers
    │   └── ImagePullError     an image is missing and pulling it failed
    ├── CapacityError          nothing can take the work now (code SCH-CAP)
    ├── ShuttingDown           the server is stopping and takes no new work (code SRV-STOPPING)
    ├── NotFoundError          a run, job or step does not exist (code NOT-FOUND)
    └── IllegalTransition      a state machine was asked for a transition it forbids

Lower-level errors (docker-py, sqlite3, OSError) are translated into these once, at
the adapter that calls them, with ``raise ... from exc``.
"""

from __future__ import annotations


class CicdError(Exception):
    """Base class of every error cicd raises on purpose."""

    code = "CICD"


class PipelineError(CicdError):
    """A pipeline file is invalid.

    ``str(error)`` reads ``FILE:LINE:COLUMN: KEY.PATH: message``; the attributes
    give each part to callers that render it differently (the API, an editor).
    """

    code = "PIPELINE-INVALID"

    def __init__(
        self,
        message: str,
        *,
        file: str = "<pipeline>",
        line: int | None = None,
        column: int | None = None,
        path: str = "",
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        key = f"{self.path}: " if self.path else ""
        return f"{where}: {key}{self.message}"


class UsageError(CicdError):
    """A command-line argument or option is invalid."""

    code = "USAGE"


class IdempotencyMismatch(UsageError):
    """An idempotency key came back with another request than the run it names."""

    code = "IDEMPOTENCY-MISMATCH"


class StorageError(CicdError):
    """The SQLite database cannot be opened, migrated or written."""

    code = "ORC-INFRA"


class SchemaTooNewError(StorageError):
    """The database has a schema version newer than this cicd supports."""


class ProviderError(CicdError):
    """A worker provider (a Docker engine, the local host) failed."""

    code = "WKM-PROV"


class EngineUnavailable(ProviderError):
    """No Docker engine responds at the configured address."""


class ImagePullError(ProviderError):
    """An image is not present on the engine and pulling it failed."""


class CapacityError(CicdError):
    """No node, or no intake slot, can take the work now; retry after ``retry_after`` seconds."""

    code = "SCH-CAP"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(CicdError):
    """The server is shutting down and accepts no new work."""

    code = "SRV-STOPPING"


class NotFoundError(CicdError, LookupError):
    """A run, job or step that a request names does not exist."""

    code = "NOT-FOUND"


class IllegalTransition(CicdError):
    """A state machine was asked to move along a transition it forbids."""

    code = "ORC-STATE"
