"""The run document: one shape for a run, its jobs and steps, wherever it is shown.

``cicd run --report`` writes it and ``cicd show --json`` prints it; the server's
API returns the same structs.
"""

from __future__ import annotations

import msgspec


class StepDocument(msgspec.Struct, kw_only=True):
    index: int
    name: str
    state: str
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    allowed_failure: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    log_size: int = 0


class JobDocument(msgspec.Struct, kw_only=True):
    id: str
    state: str
    image: str
    needs: list[str] = []
    allow_failure: bool = False
    reason: str = ""
    message: str = ""
    node: str = ""
    worker: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    steps: list[StepDocument] = []


class RunDocument(msgspec.Struct, kw_only=True):
    id: str
    number: int
    pipeline: str
    tenant_id: str
    state: str
    reason: str = ""
    source: str = ""
    executor: str = ""
    trigger: str = ""
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    jobs: list[JobDocument] = []


def encode_document(document: RunDocument) -> bytes:
    return msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n"
