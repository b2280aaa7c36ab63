"""The Docker provider: each job gets a volume, each step a container.

Why a container per step rather than ``exec`` in one job container: the engine
reports a container's exit code and OOM kill directly, a container can be
signalled through the API (``exec`` processes cannot), and a container outlives
the process that started it, so a restarted server can find a running step again
by its labels and attach to it. Steps of a job share the job's volume, mounted at
``/workspace``. See docs/design/steps.md for the measurements.

While a step runs, the next step's container is created and started, with its
script held behind a gate that reads one line from the attach stream (STEP_GATE).
The engine's work for a container (about 100 ms here, mostly the start) then
overlaps the previous step, and starting the step costs one write.

Output is read from the attach stream, which carries the step's bytes unchanged;
the engine's log drivers do not: json-file replaces invalid UTF-8, and local
drops the newline after a line of 16 KiB or more (measured on Docker 20.10, see
docs/design/steps.md).

Every blocking docker-py call runs in a worker thread under a per-engine limiter.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils.socket
import requests.exceptions
import trio

from cicd.concurrency import single_error
from cicd.errors import EngineUnavailable, ImagePullError, ProviderError
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
from cicd.workers.labels import labels_for, owner_id

logger = logging.getLogger("cicd.workers")

T = TypeVar("T")

WORKSPACE = "/workspace"

_START_HINT = (
    "start Docker (for example `sudo systemctl start docker`; on a machine without a "
    "system engine, `bash .ci/docker-setup` starts a private one), point DOCKER_HOST at "
    "a running engine, or run with --executor local"
)


# Prepended to a step's command. The shell waits for one line on its standard input
# (the attach stream) before it runs the script. So the container can start while
# the previous step still runs, and the step begins when cicd sends the line. If the
# stream closes first, because cicd stopped or gave the step up, the container
# writes GATE_CLOSED_OUTPUT to its standard error and exits with GATE_CLOSED_EXIT,
# and the script never runs. That line sets such a container apart from a script
# that exits with the same status on its own. After the line, the script's standard
# input is /dev/null, as for a container started without one. A variable named
# _cicd_gate reaches the script unset.
GATE_CLOSED_EXIT = 125
GATE_CLOSED_OUTPUT = b"cicd: the step's gate closed before the step began\n"
STEP_GATE = (
    "read -r _cicd_gate || { printf '%s\\n' \"cicd: the step's gate closed before the step "
    "began\" >&2; exit 125; }; unset _cicd_gate; exec </dev/null; "
)
# How many of a job's next steps have their container started while a step runs.
STEPS_AHEAD = 1


def gated_step_command(script: str) -> list[str]:
    """Return the argv of a step container: the gate, then ``script`` with ``sh -e``."""
    argv = step_command(script)
    argv[-1] = STEP_GATE + argv[-1]
    return argv


def _open_gate(sock: Any, container_id: str) -> None:
    """Send the line that opens a step's gate. Three bytes fit any empty socket
    buffer, so the blocking send returns at once."""
    try:
        # docker-py gives a unix socket's attach stream as a SocketIO around the socket.
        getattr(sock, "_sock", sock).sendall(b"go\n")
    except OSError as exc:
        raise ProviderError(
            f"cannot start the step in container {container_id[:12]}: writing to its "
            f"attach stream failed ({exc})") from exc


def _close_stream(sock: Any) -> None:
    """Close an attach stream's connection, so that the engine reads its end."""
    # Closing docker-py's SocketIO alone leaves the connection open while the response
    # object refers to it, so shut the socket itself down.
    try:
        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass  # not connected any more, or not a socket (an ssh:// engine's pipe)
    try:
        sock.close()
    except OSError:
        pass


def default_base_url() -> str:
    """Return the address of the engine of a provider created without one."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _new_client(base_url: str, tls: Any) -> docker.DockerClient:
    client = docker.DockerClient(
        base_url=base_url, timeout=120, tls=tls or False,
        # ssh:// through the system's ssh client: its config, keys and agent.
        use_ssh_client=base_url.startswith("ssh://"))
    if not base_url.startswith("tcp://"):
        # A local socket takes no proxy and no .netrc. Without this requests reads the
        # proxy variables on every call: 0.25-0.3 ms of CPU of 0.5-0.8 per call here.
        client.api.trust_env = False
    return client


class _ClientInThread:
    """A client of one engine, being created in a thread that :func:`connect_soon` started."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._done = threading.Event()
        self._client: docker.DockerClient | None = None
        self._error: Exception | None = None
        threading.Thread(target=self._thd_create, name="cicd docker client", daemon=True).start()

    def _thd_create(self) -> None:
        try:
            self._client = _new_client(self.base_url, None)
        except Exception as exc:  # noqa: BLE001 - take() raises it where the client is needed
            self._error = exc
        finally:
            self._done.set()

    def take(self) -> docker.DockerClient:
        self._done.wait()
        if self._error is not None:
            raise self._error
        if self._client is None:  # the thread ended without a result or an error
            return _new_client(self.base_url, None)
        return self._client


_early_clients: dict[str, _ClientInThread] = {}


def connect_soon(base_url: str | None = None) -> None:
    """Start creating the client of the engine at ``base_url`` in a thread.

    docker-py sends GET /version when it creates a client. Docker 20.10 runs
    ``runc --version`` and ``docker-init --version`` for the response, which took
    12-15 ms on the benchmark machine, against under 1 ms for GET /_ping. A caller
    that starts this before the rest of its set-up overlaps that wait with its own
    work. The next provider without TLS for the same address takes the client, and
    raises any error of its creation as if it had created the client itself.
    """
    url = base_url or default_base_url()
    if url not in _early_clients:
        _early_clients[url] = _ClientInThread(url)


class DockerProvider(Provider):
    kind = "docker"

    def __init__(self, base_url: str | None = None, *, name: str = "local",
                 max_api_threads: int = 8, stream_threads: int = 64,
                 owner: str | None = None, tls: Any = None) -> None:
        self.name = name
        self.tls = tls  # a docker.tls.TLSConfig for tcp:// engines, or None
        # Recorded on every object; `cicd run` uses host:pid, a server a stable id.
        self.owner = owner or owner_id()
        self.base_url = base_url or default_base_url()
        self._client: docker.DockerClient | None = None
        # Runs for which a worker could not remove all it created.
        self.unclean_runs: set[str] = set()
        self.api_limiter = trio.CapacityLimiter(max_api_threads)
        # Attach streams hold a thread for a step's whole life: separate limiter so
        # that long steps never starve short API calls.
        self.stream_limiter = trio.CapacityLimiter(stream_threads)
        # The nursery in which workers remove their objects after close() has returned,
        # set by `cicd run`. With None, close() removes them before it returns.
        self.background_removals: trio.Nursery | None = None
        self._waiting_calls: set[trio.CancelScope] = set()  # see _call_to_the_end
        self._abandoned = False  # set by abandon_calls, until resume_calls

    @property
    def _hint(self) -> str:
        if self.name == "local":
            return _START_HINT
        return (f"check that the engine of node {self.name} runs and that this host can "
                "reach it")

    @property
    def is_local_socket(self) -> bool:
        return self.base_url.startswith(("unix://", "/"))

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, created on first use. Creating it requests the engine's
        API version, so an engine that does not respond raises EngineUnavailable here,
        as a call would."""
        if self._client is None:
            early = _early_clients.pop(self.base_url, None) if self.tls is None else None
            try:
                self._client = early.take() if early is not None else _new_client(
                    self.base_url, self.tls)
            except docker.errors.DockerException as exc:
                raise self._translate(exc) from exc
        return self._client

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking docker-py call in a thread, translating its errors."""
        return await self._call(functools.partial(fn, *args, **kwargs), abandon_on_cancel=False)

    async def _call(self, fn: Callable[[], T], *, abandon_on_cancel: bool) -> T:
        """Run ``fn`` in a thread. With ``abandon_on_cancel``, a cancelled caller returns
        at once and the thread's result is dropped. Without it, the caller waits for the
        call, up to docker-py's own timeout (120 s)."""
        try:
            if not abandon_on_cancel:
                return await self._call_to_the_end(fn)
            return await trio.to_thread.run_sync(fn, limiter=self.api_limiter,
                                                 abandon_on_cancel=True)
        except docker.errors.DockerException as exc:
            raise self._translate(exc) from exc
        except requests.exceptions.RequestException as exc:
            raise EngineUnavailable(
                f"the Docker engine at {self.base_url} does not respond ({exc}); {self._hint}"
            ) from exc

    async def _call_to_the_end(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread and wait for it even when the caller is cancelled, so
        an object it creates is never lost track of. Only :meth:`abandon_calls` gives it
        up, when the engine stopped responding; the caller then gets EngineUnavailable."""
        if self._abandoned:
            # Removing a lost node's objects would wait minutes; fencing removes them.
            raise EngineUnavailable(f"the Docker engine at {self.base_url} stopped "
                                    f"responding, so no call is made to it; {self._hint}")
        with trio.CancelScope(shield=True) as scope:
            self._waiting_calls.add(scope)
            try:
                return await trio.to_thread.run_sync(fn, limiter=self.api_limiter,
                                                     abandon_on_cancel=True)
            finally:
                self._waiting_calls.discard(scope)
        raise EngineUnavailable(f"the Docker engine at {self.base_url} stopped responding, "
                                f"so a call to it was given up; {self._hint}")

    def abandon_calls(self) -> None:
        self._abandoned = True
        for scope in list(self._waiting_calls):
            scope.cancel()

    def resume_calls(self) -> None:
        self._abandoned = False

    def _translate(self, exc: docker.errors.DockerException) -> ProviderError:
        if isinstance(exc, docker.errors.APIError):
            detail = exc.explanation or str(exc)
            return ProviderError(f"Docker engine {self.base_url}: {detail}")
        return EngineUnavailable(
            f"cannot connect to the Docker engine at {self.base_url} ({exc}); {self._hint}"
        )

    async def check(self) -> None:
        # Abandoned on cancel, so that a probe's time limit also ends the wait on an
        # engine that accepts connections and never responds (a frozen dockerd).
        await self._call(lambda: self.client.ping(), abandon_on_cancel=True)

    async def capacity(self) -> tuple[int, int]:
        """Return the engine's (millicores, memory bytes), from ``docker info``. A caller's
        time limit ends the wait even when the engine never responds."""
        info = await self._call(lambda: self.client.info(), abandon_on_cancel=True)
        return int(info.get("NCPU") or 1) * 1000, int(info.get("MemTotal") or 0)

    def job_worker(self, *, run_id: str, job_id: str, image: str, cpu_millis: int | None,
                   memory_bytes: int | None, source: SourceArchive,
                   on_progress: Callable[[str], None], attempt: int = 1) -> JobWorker:
        return DockerJobWorker(self, run_id=run_id, job_id=job_id, image=image,
                               cpu_millis=cpu_millis, memory_bytes=memory_bytes,
                               source=source, on_progress=on_progress, attempt=attempt)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await trio.to_thread.run_sync(client.close)

    # --- images -----------------------------------------------------------------

    async def ensure_image(self, image: str, on_progress: Callable[[str], None]) -> None:
        """Pull ``image`` unless the engine has it; raise ImagePullError on failure."""
        try:
            await self.call(self.client.images.get, image)
            return
        except ProviderError as exc:
            if not isinstance(exc.__cause__, docker.errors.ImageNotFound):
                raise
        on_progress(f"pulling image {image}")
        try:
            await trio.to_thread.run_sync(
                self._thd_pull, image, on_progress, limiter=self.stream_limiter
            )
        except docker.errors.DockerException as exc:
            detail = getattr(exc, "explanation", None) or str(exc)
            raise ImagePullError(
                f"image {image!r} is not on the Docker engine at {self.base_url} and pulling "
                f"it failed: {detail}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise ImagePullError(f"pulling image {image!r} failed: {exc}") from exc

    def _thd_pull(self, image: str, on_progress: Callable[[str], None]) -> None:
        repository, tag = _split_image(image)
        last: dict[str, str] = {}
        for message in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in message:
                raise docker.errors.APIError(message["error"], explanation=message["error"])
            status = message.get("status", "")
            layer = message.get("id", "")
            progress = message.get("progress", "")
            line = f"{image}: {layer + ': ' if layer else ''}{status} {progress}".rstrip()
            # Report each layer's status changes, not every progress tick.
            if last.get(layer) != status:
                last[layer] = status
                trio.from_thread.run_sync(on_progress, line)


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag:
        return name, tag
    return image, "latest"


class DockerJobWorker(JobWorker):
    kind = "docker"

    def __init__(self, provider: DockerProvider, *, run_id: str, job_id: str, image: str,
                 cpu_millis: int | None, memory_bytes: int | None, source: SourceArchive,
                 on_progress: Callable[[str], None], attempt: int = 1) -> None:
        self.provider = provider
        self.run_id = run_id
        self.job_id = job_id
        self.image = image
        self.cpu_millis = cpu_millis
        self.memory_bytes = memory_bytes
        self.source = source
        self.on_progress = on_progress
        self.id = f"cicd-{run_id.lower()}-{job_id}" + (f"-a{attempt}" if attempt > 1 else "")
        self.workspace = WORKSPACE
        self.volume_name = self.id
        self._volume_path: str | None = None
        self._workspace_filled = False
        self._containers: list[str] = []
        # Steps whose container exists ahead of time: container id, attach socket,
        # and whether the container has started (its script waits behind the gate).
        self._created: dict[int, tuple[str, Any, bool]] = {}
        self._making: dict[int, trio.Event] = {}  # steps that work_ahead is making ready
        self.steps_ahead = STEPS_AHEAD
        self._finished: list[str] = []
        self._closed = False

    async def prepare(self) -> None:
        provider = self.provider
        labels = labels_for(self.run_id, self.job_id, owner=self.provider.owner)
        volume: dict[str, Any] = {}

        async def create_volume() -> None:
            volume.update(await provider.call(
                provider.client.api.create_volume, name=self.volume_name, labels=labels))

        with single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(provider.ensure_image, self.image, self.on_progress)
                nursery.start_soon(create_volume)
        self._volume_path = volume.get("Mountpoint")

    async def work_ahead(self, upcoming: Sequence[StepSpec]) -> None:
        # While a step runs: remove containers of finished steps, and create, attach to
        # and start the containers of the next STEPS_AHEAD steps, whose scripts then wait
        # behind the gate (STEP_GATE). Starting such a step is one line on its stream.
        finished, self._finished = self._finished, []
        async with trio.open_nursery() as nursery:
            for container_id in finished:
                nursery.start_soon(self._remove, container_id)
            for spec in upcoming[:self.steps_ahead]:
                if spec.index not in self._created and spec.index not in self._making:
                    nursery.start_soon(self._make_ready, spec)

    async def _make_ready(self, spec: StepSpec) -> None:
        done = self._making[spec.index] = trio.Event()
        try:
            container_id, sock = await self._create_attached(spec)
            self._created[spec.index] = (container_id, sock, False)
            if not self._closed:
                await self.provider.call(self.provider.client.api.start, container_id)
                self._created[spec.index] = (container_id, sock, True)
        finally:
            del self._making[spec.index]
            done.set()

    async def adopt(self) -> None:
        # The volume and its workspace exist: a previous process made them.
        self._workspace_filled = True

    async def reattach_step(self, spec: StepSpec, handle: str, *, skip_bytes: int) -> StepProcess:
        self._containers.append(handle)
        if skip_bytes == 0 and await self._never_began(handle):
            # The previous process recorded the step's start but stopped before the
            # script ran: run it now, in a new container.
            logger.info("step %d of job %s had not begun in container %s; starting it",
                        spec.index, self.job_id, handle[:12])
            await self._remove(handle)
            return await self.start_step(spec)
        return DockerStepProcess(self.provider, handle, None, on_release=self._step_released,
                                 skip_logged_bytes=skip_bytes)

    async def _never_began(self, container_id: str, *, settle: float = 0.0) -> bool:
        """Tell whether a step's container never ran its script: never started, or
        exited at its gate (GATE_CLOSED_EXIT with GATE_CLOSED_OUTPUT as its only output).

        A container still running is given ``settle`` seconds to exit: one waiting at
        the gate of a process that has ended exits as soon as the engine closes its
        input.
        """
        api = self.provider.client.api
        state = (await self.provider.call(api.inspect_container, container_id))["State"]
        if state.get("Status") == "created":
            return True
        if state.get("Running") and settle > 0:
            with trio.move_on_after(settle):
                while state.get("Running"):
                    await trio.sleep(0.1)
                    state = (await self.provider.call(api.inspect_container,
                                                      container_id))["State"]
        if state.get("Running") or state.get("ExitCode") != GATE_CLOSED_EXIT:
            return False
        output = await self.provider.call(api.logs, container_id, stdout=True, stderr=True)
        return bool(output == GATE_CLOSED_OUTPUT)

    def _step_released(self, container_id: str) -> None:
        # Looks up ``_finished`` at release time: work_ahead replaces the list.
        self._finished.append(container_id)

    async def _remove(self, container_id: str) -> None:
        if container_id in self._containers:
            self._containers.remove(container_id)
            if not await _remove_quietly(self.provider, container_id):
                self.provider.unclean_runs.add(self.run_id)

    async def _create_attached(self, spec: StepSpec) -> tuple[str, Any]:
        container_id = await self._create(spec)
        try:
            sock = await self.provider.call(
                self.provider.client.api.attach_socket, container_id,
                params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1},
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await _remove_quietly(self.provider, container_id)
            raise
        return container_id, sock

    async def _create(self, spec: StepSpec) -> str:
        provider = self.provider
        api = provider.client.api
        env = dict(spec.env)
        # Docker's init (tini) forwards signals to the script's whole process group.
        env.setdefault("TINI_KILL_PROCESS_GROUP", "1")
        host_config = api.create_host_config(
            binds={self.volume_name: {"bind": WORKSPACE, "mode": "rw"}},
            init=True,
            log_config={"type": "local", "config": {}},
            mem_limit=self.memory_bytes,
            memswap_limit=self.memory_bytes,
            nano_cpus=self.cpu_millis * 1_000_000 if self.cpu_millis else None,
        )
        name = f"{self.id}-{spec.index}"
        try:
            return await self._create_named(spec, name, env, host_config)
        except ProviderError as exc:
            if "is already in use" not in str(exc):
                raise
        # A container of this step exists already: a previous server process made it
        # ready ahead of time. Names contain the run id, so it is ours. That process
        # recorded StepStarted (durably) before it let any step begin, so a container
        # whose script ran here means a lost record: fail rather than run it twice.
        if not await self._never_began(name, settle=2.0):
            raise ProviderError(
                f"container {name} ran step {spec.index} under a previous server process, "
                "which has no record of starting it; cicd does not run the step again")
        logger.info("removing container %s left by a previous process", name)
        await _remove_quietly(provider, name)
        return await self._create_named(spec, name, env, host_config)

    async def _create_named(self, spec: StepSpec, name: str, env: dict[str, str],
                            host_config: dict[str, Any]) -> str:
        provider = self.provider
        api = provider.client.api
        created = await provider.call(
            api.create_container,
            self.image,
            gated_step_command(spec.script),
            name=name,
            environment=[f"{key}={value}" for key, value in env.items()],
            working_dir=WORKSPACE,
            labels=labels_for(self.run_id, self.job_id, spec.index, owner=provider.owner),
            host_config=host_config,
            stdin_open=True,  # with stdin_once: EOF when cicd's attach stream closes
            tty=False,
        )
        container_id = str(created["Id"])
        self._containers.append(container_id)
        return container_id

    async def _fill_workspace(self, container_id: str) -> None:
        # Fast path: the engine is on this host and its volume directory is writable
        # (root, or rootless Docker): copy the files straight in. Otherwise send a tar
        # through the engine, which works for remote engines too but costs a helper
        # process in the engine (about 60 ms per job, measured).
        path = self._volume_path
        if self.provider.is_local_socket and path and os.access(path, os.W_OK):
            await trio.to_thread.run_sync(self.source.copy_into, path)
            return
        archive = await trio.to_thread.run_sync(self.source.tar_bytes)
        ok = await self.provider.call(
            self.provider.client.api.put_archive, container_id, WORKSPACE, archive)
        if not ok:
            raise ProviderError(f"copying the source into volume {self.volume_name} failed")

    async def start_step(self, spec: StepSpec) -> StepProcess:
        provider = self.provider
        api = provider.client.api
        making = self._making.get(spec.index)
        if making is not None:
            await making.wait()
        ready = self._created.pop(spec.index, None)
        if ready is None:
            container_id, sock = await self._create_attached(spec)
            started = False
        else:
            container_id, sock, started = ready
        process = DockerStepProcess(provider, container_id, sock, on_release=self._step_released)
        try:
            if not self._workspace_filled:
                await self._fill_workspace(container_id)
                self._workspace_filled = True
            try:
                if not started:
                    await provider.call(api.start, container_id)
                _open_gate(sock, container_id)
            except BaseException:
                await process.release()
                raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await _remove_quietly(provider, container_id)
            raise
        return process

    async def close(self) -> None:
        """Remove the worker's containers and volume, or start removing them in the
        provider's ``background_removals`` nursery and return at once."""
        if self._closed:
            return
        self._closed = True
        for _container_id, sock, _started in self._created.values():
            _close_stream(sock)  # a step waiting at its gate exits without running
        nursery = self.provider.background_removals
        if nursery is None:
            await self._remove_all()
        else:
            nursery.start_soon(self._remove_all)

    async def _remove_all(self) -> None:
        provider = self.provider
        with trio.move_on_after(60, shield=True) as scope:
            async with trio.open_nursery() as nursery:
                for container_id in list(self._containers):
                    nursery.start_soon(self._remove, container_id)
            try:
                await provider.call(provider.client.api.remove_volume, self.volume_name, force=True)
            except ProviderError as exc:
                if "no such volume" not in str(exc).lower():
                    logger.warning("removing volume %s failed: %s", self.volume_name, exc)
                    provider.unclean_runs.add(self.run_id)
        if scope.cancelled_caught:
            provider.unclean_runs.add(self.run_id)
            logger.warning("removing worker %s timed out; the next run's sweep removes it", self.id)


async def _remove_quietly(provider: DockerProvider, container_id: str) -> bool:
    """Remove a container; return False (after logging) when it may still exist."""
    try:
        await provider.call(provider.client.api.remove_container, container_id, force=True, v=True)
    except ProviderError as exc:
        if "No such container" not in str(exc) and "already in progress" not in str(exc):
            logger.warning("removing container %s failed: %s", container_id[:12], exc)
            return False
    return True


def _engine_time_ms(value: object) -> int | None:
    """Return an engine timestamp (RFC 3339, nanoseconds) in ms since the epoch, or None."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None  # the zero time: not set
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


class DockerStepProcess(StepProcess):
    """A step's container, read through its attach socket.

    Without a socket (``sock`` None) the output comes from the engine's log driver
    instead, skipping ``skip_logged_bytes``: how a restarted server reads a step it
    did not start. NOTE: the log driver, unlike the attach stream, loses the newline
    after a line of 16 KiB or more, so such a line shifts the resumed offset.
    """

    def __init__(self, provider: DockerProvider, container_id: str, sock: Any, *,
                 on_release: Callable[[str], None], skip_logged_bytes: int = 0) -> None:
        self.provider = provider
        self.container_id = container_id
        self._sock = sock
        self._on_release = on_release
        self._skip = skip_logged_bytes
        self._released = False

    async def pump_output(self, sink: OutputSink) -> None:
        await trio.to_thread.run_sync(
            self._thd_pump, sink, limiter=self.provider.stream_limiter, abandon_on_cancel=True
        )

    def _thd_pump(self, sink: OutputSink) -> None:
        if self._sock is None:
            self._thd_pump_logs(sink)
            return
        self._thd_pump_attach(sink)

    def _thd_pump_attach(self, sink: OutputSink) -> None:
        """Read the attach stream in large blocks and pass its payloads to ``sink`` in batches.

        Without a TTY the stream is framed: an 8-byte header (stream id, 3 zero bytes,
        payload length, big-endian) and then the payload. Payload bytes are passed on
        unchanged and in order, however the frames split them. A batch goes to ``sink``
        at most ``linger`` seconds after its first byte arrived, or once it contains
        ``batch_bytes``. One call per batch in place of one per frame (a step writing
        1 MB/s makes about 140 frames a second) cuts the thread hops, stored chunks and
        commits that each call costs.

        While the output is slow (the previous batch went to ``sink`` at its deadline,
        short of ``batch_bytes``), the thread sleeps until the batch is due and then
        reads what arrived meanwhile, so it wakes about twice per batch and not once per
        frame. Fast output is read as it arrives: a sleep would leave the socket full
        and stall the container.
        """
        import select
        import struct
        import time

        # A little over the console's 100 ms frame interval and its 5 ms tick margin, so
        # a followed step's batches come no faster than the console's ticks and each one
        # goes out at a tick without waiting for one. Container-to-browser latency p95
        # fell from 138 to 114 ms with this (it was 50 ms), and half as many commits.
        linger = 0.11
        batch_bytes = 256 * 1024
        read_bytes = 64 * 1024  # below glibc's mmap threshold, so reads reuse the heap
        sock = self._sock
        header = struct.Struct(">BxxxL")
        stream = bytearray()  # bytes read and not yet parsed
        batch = bytearray()  # payload bytes not yet passed to the sink
        payload_left = 0  # bytes of the current frame's payload still to come
        deadline = 0.0
        poller: select.poll | None
        poller = select.poll()
        try:
            poller.register(sock, select.POLLIN | select.POLLPRI)
        except (AttributeError, TypeError, ValueError, OSError):
            poller = None  # not pollable: pass on each read's payload at once
        slow = True  # sleep until a batch is due instead of polling for each frame
        ended = False
        while not ended:
            if batch:
                wait = deadline - time.monotonic()
                if slow and poller is not None and wait > 0 and len(batch) < batch_bytes:
                    time.sleep(wait)
                    wait = 0
                if (poller is None or len(batch) >= batch_bytes
                        or not poller.poll(max(wait, 0) * 1000)):
                    slow = len(batch) < batch_bytes
                    trio.from_thread.run(sink, bytes(batch))
                    batch.clear()
                    continue
            try:
                data = docker.utils.socket.read(sock, read_bytes)
            except OSError:
                data = b""  # the socket was closed (release) or failed: output ends here
            if not data:
                if data is None:
                    continue  # interrupted before any byte arrived: read again
                ended = True
            else:
                stream += data
            position = 0
            while position < len(stream):
                if payload_left == 0:
                    if len(stream) - position < header.size:
                        break
                    payload_left = header.unpack_from(stream, position)[1]
                    position += header.size
                    continue
                taken = min(payload_left, len(stream) - position)
                if not batch:
                    deadline = time.monotonic() + linger
                batch += stream[position : position + taken]
                position += taken
                payload_left -= taken
            del stream[:position]
        if batch:
            trio.from_thread.run(sink, bytes(batch))

    def _thd_pump_logs(self, sink: OutputSink) -> None:
        api = self.provider.client.api
        skip = self._skip
        try:
            for payload in api.logs(self.container_id, stdout=True, stderr=True, stream=True,
                                    follow=True):
                if skip:
                    dropped = min(skip, len(payload))
                    payload, skip = payload[dropped:], skip - dropped
                if payload:
                    trio.from_thread.run(sink, payload)
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            logger.warning("reading the log of container %s failed: %s", self.container_id[:12], exc)

    async def wait(self) -> ExitStatus:
        provider = self.provider
        api = provider.client.api
        try:
            result = await trio.to_thread.run_sync(
                functools.partial(api.wait, self.container_id, timeout=None),
                limiter=provider.stream_limiter, abandon_on_cancel=True,
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ProviderError(
                f"waiting for container {self.container_id[:12]} failed: {exc}") from exc
        reattached = self._sock is None
        if result.get("StatusCode") == 0 and not reattached:
            return ExitStatus(exit_code=0)
        # A failure may be an OOM kill of any process of the step, which only inspect
        # reports. A step this process did not start may have ended long before: its end
        # time comes from the engine.
        info = await provider.call(api.inspect_container, self.container_id)
        state = info["State"]
        if state.get("ExitCode") == 137 and not state.get("OOMKilled"):
            # The engine records the OOM event apart from the exit, and on a busy host it
            # can arrive after the exit does: look once more before calling it a SIGKILL.
            await trio.sleep(0.25)
            info = await provider.call(api.inspect_container, self.container_id)
            state = info["State"]
        return ExitStatus(exit_code=int(state.get("ExitCode", -1)),
                          oom_killed=bool(state.get("OOMKilled")),
                          ended_at_ms=_engine_time_ms(state.get("FinishedAt")) if reattached
                          else None)

    async def send_signal(self, sig: signal.Signals) -> None:
        try:
            await self.provider.call(self.provider.client.api.kill, self.container_id,
                                     signal=sig.name)
        except ProviderError as exc:
            text = str(exc)
            if "is not running" in text or "No such container" in text:
                return
            raise

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._sock is not None:
            _close_stream(self._sock)
        self._on_release(self.container_id)
