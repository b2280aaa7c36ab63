"""The parsed pipeline: immutable structs that the parser returns.

A ``Pipeline`` from ``parse_pipeline`` is always valid: job ids are unique and
well-formed, every ``needs`` entry names a job of the same pipeline and the ``needs``
graph has no cycle.
"""

from __future__ import annotations

import re

import msgspec

from cicd.pipeline import graph
from cicd.pipeline.quantities import quote

DEFAULT_JOB_TIMEOUT_SECONDS = 3600.0
DISPLAY_NAME_MAX_CHARS = 60

_STEP_INDEX = re.compile(r"[0-9]+")


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """CPU and memory limits of a job's container. None means no limit."""

    cpu_millis: int | None = None
    memory_bytes: int | None = None


RETRY_WHEN = ("node_lost",)
MAX_RETRIES = 10


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """When a failed job starts again: at most ``max`` more times, for the causes in ``when``."""

    max: int = 0
    when: tuple[str, ...] = ()


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One command of a job, run by a shell inside the job's container."""

    index: int
    """1-based position of the step in its job."""
    name: str | None = None
    run: str
    env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float | None = None
    """Seconds, or None to be bounded only by the job's timeout."""
    allow_failure: bool = False
    line: int = 0
    """1-based line of the step in the pipeline file, or 0 when not parsed from a file."""

    @property
    def display_name(self) -> str:
        """Explicit name, or else the first non-blank line of ``run``, cut to 60 characters."""
        if self.name is not None:
            return self.name
        first_line = next((line.strip() for line in self.run.splitlines() if line.strip()), "")
        if len(first_line) > DISPLAY_NAME_MAX_CHARS:
            return first_line[: DISPLAY_NAME_MAX_CHARS - 3] + "..."
        return first_line


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A list of steps that run in order in one container."""

    id: str
    image: str
    needs: tuple[str, ...] = ()
    env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: float = DEFAULT_JOB_TIMEOUT_SECONDS
    """Seconds for the whole job, steps included."""
    allow_failure: bool = False
    resources: Resources = Resources()
    runs_on: dict[str, str] = msgspec.field(default_factory=dict)
    """Node labels the job needs, all of them (``pool: fast``)."""
    retry: Retry = Retry()
    steps: tuple[Step, ...]
    line: int = 0
    """1-based line of the job's id in the pipeline file, or 0 when not parsed from a file."""

    def find_step(self, ref: str) -> Step:
        """Return the step that ``ref`` names.

        ``ref`` is read first as a 1-based index such as ``"2"``, then matched against
        explicit step names (never numbers: the parser rejects them), then against
        display names. Raises LookupError that lists the job's steps when nothing
        matches or when two display names match.
        """
        if _STEP_INDEX.fullmatch(ref) and 1 <= int(ref) <= len(self.steps):
            return self.steps[int(ref) - 1]
        for step in self.steps:
            if step.name == ref:
                return step

        matches = [step for step in self.steps if step.display_name == ref]
        if len(matches) == 1:
            return matches[0]
        listing = ", ".join(f"{step.index} {step.display_name!r}" for step in self.steps)
        if matches:
            indexes = ", ".join(str(step.index) for step in matches)
            raise LookupError(
                f"step {quote(ref)} of job {self.id!r} is ambiguous: steps {indexes} have "
                f"that display name; use the step index instead. Steps: {listing}"
            )
        raise LookupError(f"job {self.id!r} has no step {quote(ref)}. Steps: {listing}")


class Pipeline(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed pipeline file."""

    version: int = 1
    name: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    priority: int = 0
    """Higher runs first when jobs wait for nodes."""
    jobs: dict[str, Job]
    """Jobs by id, in file order."""
    source_file: str = "<pipeline>"

    def topological_order(self) -> list[str]:
        """Return the job ids so that each job comes after the jobs it needs.

        Among jobs that are ready at the same point, file order decides.
        """
        return graph.topological_order(self._needs_graph())

    def dependents(self, job_id: str) -> set[str]:
        """Return the ids of the jobs that need ``job_id`` directly or transitively.

        Raises LookupError when the pipeline has no job ``job_id``.
        """
        return graph.dependents(self._needs_graph(), job_id)

    def _needs_graph(self) -> dict[str, tuple[str, ...]]:
        return {job_id: job.needs for job_id, job in self.jobs.items()}


def effective_env(pipeline: Pipeline, job: Job, step: Step) -> dict[str, str]:
    """Merge the pipeline's, the job's and the step's ``env`` into the step's variables.

    A step's ``env`` overrides its job's ``env``, which overrides the pipeline's ``env``.
    """
    return {**pipeline.env, **job.env, **step.env}
