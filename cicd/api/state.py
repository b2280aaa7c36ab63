"""State shared by the request handlers: the service, the host guard and the drain signal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio
from quart import current_app, g

from cicd.api.contract import RunServiceProtocol
from cicd.api.guard import HostGuard

EXTENSION = "cicd.api"


class Drain:
    """The signal that the server is shutting down, for handlers that stream without end.

    A handler runs each wait of a stream inside :meth:`cancel_scope`; :meth:`start`
    cancels all of them, so WebSocket handlers can close with 1001 (going away)
    instead of waiting for the server's graceful timeout to cut them off.
    """

    def __init__(self) -> None:
        self.started = False
        self._scopes: set[trio.CancelScope] = set()

    def start(self) -> None:
        self.started = True
        for scope in list(self._scopes):
            scope.cancel()

    @contextlib.contextmanager
    def cancel_scope(self) -> Iterator[trio.CancelScope]:
        """Open a cancel scope that is cancelled when the drain starts (at once if it has)."""
        scope = trio.CancelScope()
        if self.started:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)


class ApiState:
    def __init__(self, service: RunServiceProtocol, guard: HostGuard, openapi: bytes) -> None:
        self.service = service
        self.guard = guard
        self.openapi = openapi
        self.drain = Drain()
        # Failed calls of service.record_request_latency. The first is logged at WARNING.
        self.latency_failures = 0


def current_state() -> ApiState:
    state = current_app.extensions[EXTENSION]
    assert isinstance(state, ApiState)
    return state


def current_service() -> RunServiceProtocol:
    return current_state().service


def current_request_id() -> str:
    """Return the id the guard gave this request or WebSocket ("unknown" before the guard ran)."""
    request_id = g.get("request_id")
    return request_id if isinstance(request_id, str) else "unknown"
