"""The interface between the execution context and a worker provider.

A provider (the Docker engine, or the local host) gives each job a
:class:`JobWorker`: a workspace holding a fresh copy of the source, in which steps
start one at a time as :class:`StepProcess` objects that can be signalled,
waited for and read.
"""

from __future__ import annotations

import abc
import logging
import os
import signal
import stat
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from cicd.errors import ProviderError

logger = logging.getLogger("cicd.workers")

OutputSink = Callable[[bytes], Awaitable[None]]

# Prepended to every step script, on the script's first line so that the shell's
# line numbers in error messages match the user's lines. It merges stderr into
# stdout, so both arrive in one stream in the order they were written, and turns
# on pipefail where the shell has it (bash, busybox ash; not dash).
SCRIPT_PRELUDE = "exec 2>&1; (set -o pipefail) 2>/dev/null && set -o pipefail; "


def step_command(script: str) -> list[str]:
    """Return the argv that runs ``script`` with ``sh -e``."""
    return ["/bin/sh", "-e", "-c", SCRIPT_PRELUDE + script]


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    job_id: str
    index: int
    name: str
    script: str
    env: dict[str, str]


class ExitStatus(msgspec.Struct, frozen=True, kw_only=True):
    exit_code: int
    oom_killed: bool = False
    # The step's end time (ms since the epoch) as the engine recorded it, for a step
    # that may have ended while no server watched it; None: the moment it was seen.
    ended_at_ms: int | None = None


class StepProcess(abc.ABC):
    """One running step."""

    @abc.abstractmethod
    async def pump_output(self, sink: OutputSink) -> None:
        """Feed the step's output to ``sink`` in arrival order until it ends."""

    @abc.abstractmethod
    async def wait(self) -> ExitStatus:
        """Wait for the step to end."""

    @abc.abstractmethod
    async def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the step's processes; a step that already ended is not an error."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Free the step's resources (its container or process group); safe to call twice."""


class JobWorker(abc.ABC):
    """The place where one job's steps run, in order, sharing a workspace."""

    id: str
    workspace: str
    kind: str = ""  # the kind of its provider: "docker" or "local"

    @abc.abstractmethod
    async def prepare(self) -> None:
        """Make the image and the workspace ready; raise ProviderError when impossible."""

    @abc.abstractmethod
    async def start_step(self, spec: StepSpec) -> StepProcess:
        """Start one step."""

    async def adopt(self) -> None:
        """Take over the worker a previous process prepared (after a restart)."""
        raise ProviderError(f"{type(self).__name__} cannot take over a running job")

    async def reattach_step(self, spec: StepSpec, handle: str, *, skip_bytes: int) -> StepProcess:
        """Take over a step a previous process started; its output resumes after ``skip_bytes``."""
        raise ProviderError(f"{type(self).__name__} cannot take over a running step")

    async def work_ahead(self, upcoming: Sequence[StepSpec]) -> None:
        """Do housekeeping while a step runs, such as getting the next of ``upcoming`` (the
        steps after it, in order) ready (optional).

        It runs beside the step and may outlast it: ``start_step`` of a step that is
        being made ready waits for that. It is cancelled when no more steps will run.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Remove everything the worker created; safe to call twice.

        The Docker provider can instead start the removal in a nursery of the caller's
        and return at once (see ``DockerProvider.background_removals``).
        """


class Provider(abc.ABC):
    """A source of workers: one Docker engine, or the local host."""

    name: str
    kind: str

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise ProviderError unless the provider responds."""

    @abc.abstractmethod
    def job_worker(
        self, *, run_id: str, job_id: str, image: str, cpu_millis: int | None,
        memory_bytes: int | None, source: SourceArchive, on_progress: Callable[[str], None],
        attempt: int = 1,
    ) -> JobWorker:
        """Return a worker for one job (nothing is created until ``prepare``).

        ``attempt`` is 2 and up when a job starts again after its node was lost: the
        worker's objects then get names of their own.
        """

    async def aclose(self) -> None:
        """Release connections held by the provider."""

    def abandon_calls(self) -> None:
        """Give up the calls now waiting for the provider, which stopped responding.

        They raise at once instead of waiting for their own timeouts, and so do later
        calls, until :meth:`resume_calls`. A provider whose calls cannot hang has
        nothing to give up.
        """

    def resume_calls(self) -> None:
        """Let calls through again: the provider responds (after :meth:`abandon_calls`)."""


class SourceArchive:
    """The directory being built, copied for each job and never written to.

    Only regular files, directories and symbolic links are copied. Named pipes,
    sockets and device files are skipped with a warning: a job could not use them
    (a pipe blocks its reader), and copying one fails.
    """

    def copy_into(self, target: str) -> None:
        """Copy the directory's contents into ``target``, creating it if needed."""
        import shutil

        try:
            shutil.copytree(self.path, target, symlinks=True, dirs_exist_ok=True,
                            ignore=_special_files)
        except OSError as exc:
            raise ProviderError(f"copying {self.path} into the workspace {target} failed: "
                                f"{exc}") from exc

    def __init__(self, path: str) -> None:
        self.path = path
        self._tar: bytes | None = None

    def tar_bytes(self) -> bytes:
        """Return the directory as an uncompressed tar (built once, on first use)."""
        if self._tar is None:
            import io
            import tarfile

            buffer = io.BytesIO()
            def regular(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
                if info.isfile() or info.isdir() or info.issym() or info.islnk():
                    return info
                logger.warning("source %s: skipped %s, not a regular file, directory or link",
                               self.path, info.name)
                return None

            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                try:
                    tar.add(self.path, arcname=".", recursive=True, filter=regular)
                except OSError as exc:
                    raise ProviderError(f"reading {self.path} for the workspace failed: "
                                        f"{exc}") from exc
            self._tar = buffer.getvalue()
        return self._tar


DEFAULT_GRACE_SECONDS = 10.0
TERMINATE = signal.SIGTERM
KILL = signal.SIGKILL


def _special_files(directory: str, names: list[str]) -> list[str]:
    """Return the entries of ``directory`` that are not regular files, directories or links."""
    skipped = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except OSError:
            continue  # removed meanwhile: copytree reports it
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.append(name)
    if skipped:
        logger.warning("source %s: skipped %s, not regular files, directories or links",
                       directory, ", ".join(sorted(skipped)))
    return skipped
