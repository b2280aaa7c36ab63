"""The calls the API makes into the run service, written down as a typing protocol.

The API depends on this protocol, not on ``cicd.orchestration.service``, so that it
can be built and tested against an in-memory service; ``RunService`` satisfies it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cicd.orchestration.documents import (
    ActionResult,
    DeadLetter,
    EventPage,
    EventRecord,
    LogSlice,
    NodeInfo,
    RunDocument,
    RunPage,
    SubmitRequest,
)
from cicd.telemetry.traces import TracesData


class RunServiceProtocol(Protocol):
    """The methods of the run service that the API calls.

    Errors are members of the :mod:`cicd.errors` tree, and the API maps each ``code``
    to an HTTP status (see :mod:`cicd.api.responses`).
    """

    @property
    def accepting(self) -> bool:
        """False once shutdown began: ``submit`` raises ``ShuttingDown`` from then on."""
        ...

    def readiness(self) -> dict[str, str]:
        """Map each component to ``"ok"`` or the reason it is not ready."""
        ...

    async def submit(
        self, request: SubmitRequest, *, idempotency_key: str | None
    ) -> tuple[RunDocument, bool]:
        """Start a run, or return the run already started under this key or run id.

        Returns ``(document, created)``. Raises ``PipelineError``, ``UsageError``,
        ``CapacityError`` or ``ShuttingDown``.
        """
        ...

    async def get_run(self, run_id: str) -> RunDocument: ...

    async def list_runs(
        self,
        *,
        state: str | None,
        tenant: str | None,
        pipeline: str | None,
        since_ms: int | None,
        cursor: str | None,
        limit: int,
    ) -> RunPage: ...

    async def cancel_run(self, run_id: str) -> ActionResult: ...

    async def cancel_job(self, run_id: str, job_id: str) -> ActionResult: ...

    async def retry_run(self, run_id: str) -> ActionResult:
        """Start a new run of the same pipeline and source; ``.run`` is the new run."""
        ...

    async def read_log(
        self, run_id: str, job_id: str, step: str, *, offset: int, limit: int | None
    ) -> LogSlice:
        """Read stored output of a step; ``step`` is a 1-based index or the step's name."""
        ...

    def follow_log(
        self, run_id: str, job_id: str, step: str, *, offset: int
    ) -> AsyncIterator[bytes]:
        """Yield output from ``offset`` on as it is written, ending after the step ended."""
        ...

    async def events_after(self, after: int, limit: int) -> EventPage: ...

    def follow_events(self, after: int) -> AsyncIterator[EventRecord]:
        """Yield every event with an id above ``after``, waiting for new ones; never ends."""
        ...

    def nodes(self) -> list[NodeInfo]: ...

    def node_info(self, name: str) -> NodeInfo:
        """Return one node; raises NotFoundError for an unknown name."""
        ...

    async def cordon_node(self, name: str, *, cordoned: bool, drain: bool = False) -> NodeInfo:
        """Cordon (with ``drain``: drain) or uncordon a node and return it."""
        ...

    def metrics_text(self) -> str:
        """Return the metrics in the Prometheus text exposition format (version 0.0.4)."""
        ...

    def record_request_latency(self, endpoint: str, tenant: str, milliseconds: float) -> None:
        """Record one HTTP request's latency in the ``ui_latency_ms`` histogram.

        ``endpoint`` is the method and the route's rule (``"GET /api/v1/runs/<run_id>"``)
        or ``"unmatched"``, so the label has few values.
        """
        ...

    async def list_dead_letters(self) -> list[DeadLetter]:
        """List the dead letters in id order, the replayed ones included."""
        ...

    async def run_trace(self, run_id: str) -> TracesData:
        """Return the trace of one run; raise ``NotFoundError`` for an unknown run."""
        ...

    async def recent_traces(self, limit: int) -> TracesData:
        """Return the traces of the ``limit`` runs accepted last, newest first."""
        ...

    async def replay_dead_letter(self, dead_letter_id: int) -> tuple[bool, str]:
        """Deliver a dead letter's event to its subscriber again.

        Returns ``(replayed, message)``: ``replayed`` is False when the dead letter was
        replayed before or the subscriber failed again. Raises ``NotFoundError`` for an
        unknown id or a subscriber that does not run in this server.
        """
        ...
