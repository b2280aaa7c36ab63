"""Building the request of a retry: the same pipeline and source, the jobs that did not pass."""

from __future__ import annotations

from cicd.errors import IllegalTransition
from cicd.events import model as ev
from cicd.orchestration.documents import RunDocument


class RetryConflict(IllegalTransition):
    """The run cannot be retried now (still running, or nothing to rerun)."""


def retry_event(document: RunDocument, original: ev.RunRequested, commit: str,
                new_run_id: str) -> ev.RunRequested:
    """Return the RunRequested of a run that reruns every job of ``document`` that did not
    succeed, from the original's exact pipeline text and (for git) resolved commit."""
    if document.state in ("pending", "running"):
        raise RetryConflict(f"run {document.id} is still {document.state}; cancel it or wait "
                            "for it to end before retrying")
    rerun = [job.id for job in document.jobs if job.state != "succeeded"]
    if document.jobs and not rerun:
        raise RetryConflict(f"every job of run {document.id} succeeded; nothing to retry")
    only = rerun if document.jobs else None
    return ev.RunRequested(
        run_id=new_run_id, tenant_id=original.tenant_id, correlation_id=original.correlation_id,
        pipeline=original.pipeline, pipeline_yaml=original.pipeline_yaml, source=original.source,
        jobs=[], executor=original.executor, trigger="retry", retry_of=document.id,
        only_jobs=only, source_kind=original.source_kind,
        source_ref=commit or original.source_ref, pipeline_path=original.pipeline_path,
    )
