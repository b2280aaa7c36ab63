"""Checks every request passes before routing: its request id, Host and Origin.

:mod:`cicd.security.hosts` checks Host and Origin. This module raises its
rejections as API errors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from cicd.api.responses import ApiError
from cicd.security.hosts import DEFAULT_SERVER_NAMES, ServerNames, normalize_name

__all__ = ["DEFAULT_SERVER_NAMES", "REQUEST_ID_HEADER", "HostGuard", "normalize_name",
           "request_id_from"]

REQUEST_ID_HEADER = "X-Request-Id"

# Ids a client may choose: UUIDs, ULIDs, trace ids. Anything else is replaced, so a
# request id contains only these characters and is safe to copy into logs and headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id_from(header: str | None) -> str:
    """Return the client's request id when it is sane, else a new random one."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class HostGuard:
    """The server's names, checked against each request's Host and Origin."""

    def __init__(self, server_names: Iterable[str]) -> None:
        self._names = ServerNames(server_names)
        self.names = self._names.names

    def check(self, host: str | None, origin: str | None) -> None:
        """Raise :class:`ApiError` unless ``host`` and ``origin`` name this server."""
        rejection = self._names.check(host, origin)
        if rejection is not None:
            raise ApiError(rejection.message, status=rejection.status, code=rejection.code,
                           details=rejection.details)
