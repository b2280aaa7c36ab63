"""The local provider: steps run as processes on this host, without an image.

For machines without a Docker engine. Each job gets a temporary copy of the
source; each step runs as ``sh -e`` in its own session, so a signal reaches the
whole process group. Resource limits and images are ignored (the run driver
warns about them).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable

import trio

from cicd.errors import ProviderError
from cicd.workers.base import (
    ExitStatus,
    JobWorker,
    OutputSink,
    Provider,
    SourceArchive,
    StepProcess,
    StepSpec,
    step_command,
)

logger = logging.getLogger("cicd.workers")

READ_SIZE = 65536


class LocalProvider(Provider):
    kind = "local"

    def __init__(self) -> None:
        self.name = "local-host"

    async def check(self) -> None:
        if not os.path.exists("/bin/sh"):
            raise ProviderError("the local executor needs /bin/sh, which this host lacks")

    def job_worker(self, *, run_id: str, job_id: str, image: str, cpu_millis: int | None,
                   memory_bytes: int | None, source: SourceArchive,
                   on_progress: Callable[[str], None], attempt: int = 1) -> JobWorker:
        return LocalJobWorker(run_id=run_id, job_id=job_id, source=source, attempt=attempt)


class LocalJobWorker(JobWorker):
    kind = "local"

    def __init__(self, *, run_id: str, job_id: str, source: SourceArchive,
                 attempt: int = 1) -> None:
        self.id = f"local-{run_id.lower()}-{job_id}" + (f"-a{attempt}" if attempt > 1 else "")
        self.source = source
        self._tempdir: str | None = None
        self.workspace = ""

    async def prepare(self) -> None:
        self._tempdir = tempfile.mkdtemp(prefix=f"{self.id}-")
        self.workspace = os.path.join(self._tempdir, "workspace")
        await trio.to_thread.run_sync(self.source.copy_into, self.workspace)

    async def start_step(self, spec: StepSpec) -> StepProcess:
        env = dict(os.environ)
        env.update(spec.env)
        try:
            process = await trio.lowlevel.open_process(
                step_command(spec.script),
                cwd=self.workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            # ValueError: a NUL in the command or the environment, from a pipeline stored
            # before the parser rejected one (a retry of an older run).
            raise ProviderError(f"starting step {spec.name!r} failed: {exc}") from exc
        return LocalStepProcess(process)

    async def close(self) -> None:
        if self._tempdir is not None:
            path, self._tempdir = self._tempdir, None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    lambda: shutil.rmtree(path, ignore_errors=True)
                )


class LocalStepProcess(StepProcess):
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._released = False

    async def pump_output(self, sink: OutputSink) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                return
            # ReceiveStream may return a bytearray. bytes() copies only that case,
            # because it returns an existing bytes object unchanged.
            await sink(bytes(data))

    async def wait(self) -> ExitStatus:
        code = await self.process.wait()
        # Processes the script left in the background would keep the output pipe
        # open; end the whole group, as a container's end would.
        self._kill_group(signal.SIGKILL)
        if code < 0:
            code = 128 - code  # killed by a signal: report it as a shell would
        return ExitStatus(exit_code=code)

    def _kill_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def send_signal(self, sig: signal.Signals) -> None:
        self._kill_group(sig)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._kill_group(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            if self.process.stdout is not None:
                await self.process.stdout.aclose()
            await self.process.wait()
