"""The checks of a request's Host and Origin against the server's own names.

The Host check defends against DNS rebinding. A page on another site can point its
own host name at 127.0.0.1 and then read this server's responses as same-origin. The
request still carries that foreign name in ``Host``, so only the server's own names
are accepted. The Origin check rejects requests a browser sends on behalf of
another site: cross-site ``fetch`` and form posts, and every WebSocket handshake.

The API turns a :class:`Rejection` into its error response.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import msgspec

from cicd.errors import UsageError

DEFAULT_SERVER_NAMES = ("127.0.0.1", "localhost", "::1")

# The setting that lists the names (see docs/configuration.md), named in both rejections.
SETTING_HINT = "server_names in the [server] section of the configuration"


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """The rejection of a request: HTTP status, stable code, message and details."""

    status: int
    code: str
    message: str
    details: dict[str, object] | None = None


def normalize_name(name: str) -> str:
    """Lower-case a host name and drop a trailing dot and IPv6 brackets."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def host_without_port(host: str) -> str:
    """Return a Host header's name part: ``[::1]:80`` gives ``[::1]``, ``a:80`` gives ``a``."""
    if host.startswith("["):
        closing = host.find("]")
        return host[: closing + 1] if closing != -1 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def origin_host(origin: str) -> str | None:
    """Return the host of an Origin header, or None for ``null`` and unparsable values."""
    try:
        host = urlsplit(origin.strip()).hostname
    except ValueError:
        return None
    return normalize_name(host) if host else None


class ServerNames:
    """The host names of this server, and the checks of Host and Origin against them."""

    def __init__(self, server_names: Iterable[str]) -> None:
        configured = list(server_names)
        names = [normalize_name(name) for name in configured]
        if not names or not all(names):
            raise UsageError(
                f"invalid server names {configured!r}: give at least one host name "
                "or address, none of them empty"
            )
        self.names = tuple(dict.fromkeys(names))
        self._allowed = frozenset(self.names)

    def check(self, host: str | None, origin: str | None) -> Rejection | None:
        """Return the rejection of a request that does not name this server, else None."""
        listed = ", ".join(self.names)

        if not host:
            return Rejection(
                status=400, code="HOST-NOT-ALLOWED",
                message=f"the request has no Host header; send one of this server's names: "
                        f"{listed}",
            )

        bare = host_without_port(host)
        port = host[len(bare):]
        if port and not (port.startswith(":") and port[1:].isdigit()):
            return Rejection(
                status=400, code="HOST-NOT-ALLOWED",
                message=f"Host {host!r} has an invalid port {port!r}; send one of this "
                        f"server's names, optionally with a numeric port: {listed}",
            )
        name = normalize_name(bare)
        if name not in self._allowed:
            return Rejection(
                status=421, code="HOST-NOT-ALLOWED",
                message=f"Host {name!r} is not one of this server's names ({listed}). If "
                        f"clients reach the server under that name, add it to {SETTING_HINT}.",
                details={"host": name, "server_names": list(self.names)},
            )

        if origin is None:
            return None
        from_host = origin_host(origin)
        if from_host is None or from_host not in self._allowed:
            return Rejection(
                status=403, code="ORIGIN-NOT-ALLOWED",
                message=f"Origin {origin!r} is another site; this server accepts browser "
                        f"requests only from pages served under its own names ({listed}). To "
                        f"allow it, add the page's host to {SETTING_HINT}.",
                details={"origin": origin, "server_names": list(self.names)},
            )
        return None
