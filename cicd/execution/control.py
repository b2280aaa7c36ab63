"""How a run asks its steps to stop: gracefully first, then at once."""

from __future__ import annotations

import trio


class StopRequest:
    """Set by the first interrupt (``graceful``) and by a second one (``immediate``).

    On ``graceful`` running steps get SIGTERM and the grace period; on
    ``immediate`` they get SIGKILL without waiting for the rest of it.
    """

    def __init__(self) -> None:
        self.graceful = trio.Event()
        self.immediate = trio.Event()
        self.reason = "cancelled"

    def request(self, reason: str = "cancelled") -> None:
        if self.graceful.is_set():
            self.immediate.set()
        else:
            self.reason = reason
            self.graceful.set()

    @property
    def requested(self) -> bool:
        return self.graceful.is_set()
