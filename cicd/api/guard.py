"""Checks every request passes before routing: its request id, Host and Origin.

The Host check defends against DNS rebinding. A page on another site can point its
own host name at 127.0.0.1 and then read this server's responses as same-origin. The
request still carries that foreign name in ``Host``, so only the server's own names
are accepted. The Origin check rejects requests a browser sends on behalf of
another site: cross-site ``fetch`` and form posts, and every WebSocket handshake.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from urllib.parse import urlsplit

from cicd.api.responses import ApiError
from cicd.errors import UsageError

DEFAULT_SERVER_NAMES = ("127.0.0.1", "localhost", "::1")

# The setting that lists the names (see docs/configuration.md), named in both rejections.
SETTING_HINT = "server_names in the [server] section of the configuration"

REQUEST_ID_HEADER = "X-Request-Id"

# Ids a client may choose: UUIDs, ULIDs, trace ids. Anything else is replaced, so a
# request id contains only these characters and is safe to copy into logs and headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def request_id_from(header: str | None) -> str:
    """Return the client's request id when it is sane, else a new random one."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def normalize_name(name: str) -> str:
    """Lower-case a host name and drop a trailing dot and IPv6 brackets."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        closing = host.find("]")
        return host[: closing + 1] if closing != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class HostGuard:
    """The host names of this server, and the checks of Host and Origin against them."""

    def __init__(self, server_names: Iterable[str]) -> None:
        names = [normalize_name(name) for name in server_names]
        if not names or not all(names):
            raise UsageError(
                f"invalid server names {list(server_names)!r}: give at least one host name "
                "or address, none of them empty"
            )
        self.names = tuple(dict.fromkeys(names))
        self._allowed = frozenset(self.names)

    def check(self, host: str | None, origin: str | None) -> None:
        """Raise :class:`ApiError` unless ``host`` and ``origin`` name this server."""
        listed = ", ".join(self.names)
        if not host:
            raise ApiError(
                f"the request has no Host header; send one of this server's names: {listed}",
                code="HOST-NOT-ALLOWED",
            )
        name = normalize_name(_host_without_port(host))
        if name not in self._allowed:
            raise ApiError(
                f"Host {name!r} is not one of this server's names ({listed}). If clients "
                f"reach the server under that name, add it to {SETTING_HINT}.",
                status=421,
                code="HOST-NOT-ALLOWED",
                details={"host": name, "server_names": list(self.names)},
            )
        if origin is None:
            return
        origin_host = _origin_host(origin)
        if origin_host is None or origin_host not in self._allowed:
            raise ApiError(
                f"Origin {origin!r} is another site; this server accepts browser requests "
                f"only from pages served under its own names ({listed}). To allow it, add "
                f"the page's host to {SETTING_HINT}.",
                status=403,
                code="ORIGIN-NOT-ALLOWED",
                details={"origin": origin, "server_names": list(self.names)},
            )


def _origin_host(origin: str) -> str | None:
    """Return the host of an Origin header, or None for ``null`` and unparsable values."""
    try:
        host = urlsplit(origin.strip()).hostname
    except ValueError:
        return None
    return normalize_name(host) if host else None
