"""Stop requests from a run to its steps: graceful first, then immediate."""

from __future__ import annotations

from collections.abc import Callable

import trio


class StopRequest:
    """Set by the first request (``graceful``) and by a second one (``immediate``).

    On ``graceful`` running steps get SIGTERM and the grace period; on
    ``immediate`` they get SIGKILL without waiting for the rest of it. A run has
    one request and gives each job a child: stopping the run stops every job, and
    stopping a job leaves the others running.
    """

    def __init__(self) -> None:
        self.graceful = trio.Event()
        self.immediate = trio.Event()
        self.reason = "cancelled"
        self._children: list[StopRequest] = []
        self._listeners: list[Callable[[], None]] = []

    def request(self, reason: str = "cancelled") -> None:
        if self.graceful.is_set():
            self.immediate.set()
        else:
            self.reason = reason
            self.graceful.set()
            for listener in list(self._listeners):
                listener()
        for child in self._children:
            child.request(reason)

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously) on the first request; return what undoes this."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def child(self) -> StopRequest:
        """Return a request that is set whenever this one is (and can be set alone)."""
        child = StopRequest()
        self._children.append(child)
        if self.graceful.is_set():
            child.request(self.reason)
        if self.immediate.is_set():
            child.request(self.reason)
        return child

    @property
    def requested(self) -> bool:
        return self.graceful.is_set()
