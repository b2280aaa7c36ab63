"""Extra Docker engines ("nodes") on this machine for multi-node tests.

`.ci/docker-engines` starts and stops the engines and loads their images. This module
wraps it for tests and adds the harsh stop that a lost node looks like: SIGKILL of
dockerd. Each engine lives in ``base_dir/name`` with its own socket, data root, exec
root, pidfile, managed containerd and containerd namespace ``cicd-<name>``.

What a restart after ``Engine.stop()`` finds, measured with dockerd 20.10.24 and
containerd 1.6.20 (Debian 12), live-restore off:

- SIGKILL of dockerd also kills its managed containerd, because dockerd starts it with
  a parent-death signal (``stop()`` kills it directly too). The containerd-shim-runc-v2
  processes and the containers keep running, but no API reaches them.
- ``start()`` runs a new dockerd, which finds the still-running containers and stops
  them before it serves the API: SIGTERM, then SIGKILL after the container's stop
  timeout (10 s by default). So ``start()`` takes that long when a leftover container
  ignores SIGTERM, as ``sleep`` does when it runs as PID 1. Give test containers
  ``init=True`` or a short ``stop_timeout`` to keep restarts fast.
- Afterwards every leftover container is listed with status ``exited``: exit code 143
  if SIGTERM ended it, 137 if SIGKILL did, 255 if it was already dead (see
  ``stop(kill_containers=True)``). Containers that had exited before keep their state.
  A container with restart policy ``always`` is started again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "docker-engines"
DEFAULT_BASE_DIR = Path(os.environ.get("CICD_ENGINES_DIR", "/var/lib/cicd-ci/engines"))
DEFAULT_IMAGES = ("busybox:latest",)


class EngineError(RuntimeError):
    """Starting or stopping an extra Docker engine failed."""


def _process_alive(pid: int) -> bool:
    """Return whether PID exists and is not a zombie.

    The PID 1 of some machines (this CI machine's included) does not reap orphans, so a
    killed dockerd can stay in the process table as a zombie.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _run_script(*args: str, images: Sequence[str], timeout: float) -> None:
    env = dict(os.environ, CICD_ENGINE_IMAGES=" ".join(images))
    command = ["bash", str(SCRIPT), *args]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"`.ci/docker-engines {' '.join(args)}` timed out after "
                          f"{timeout:.0f}s; see dockerd.log in each engine directory") from exc
    if result.returncode != 0:
        raise EngineError(f"`.ci/docker-engines {' '.join(args)}` failed with exit status "
                          f"{result.returncode}:\n{result.stderr.strip()}")


@dataclass
class Engine:
    """One extra Docker engine, started and stopped through `.ci/docker-engines`."""

    name: str
    base_dir: Path = DEFAULT_BASE_DIR
    images: tuple[str, ...] = DEFAULT_IMAGES

    @property
    def home(self) -> Path:
        return self.base_dir / self.name

    @property
    def socket_path(self) -> Path:
        return self.home / "docker.sock"

    @property
    def base_url(self) -> str:
        """Docker API address for ``docker.DockerClient(base_url=...)`` or ``docker -H``."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.home / "dockerd.log"

    @property
    def containerd_namespace(self) -> str:
        return f"cicd-{self.name}"

    def pid(self) -> int | None:
        """Return the pid of this engine's live dockerd, or None when it is not running."""
        try:
            pid = int((self.home / "dockerd.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _process_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return None
        # The pidfile can outlive dockerd after SIGKILL, and the kernel can reuse the pid.
        if os.fsencode(str(self.home / "dockerd.pid")) not in cmdline:
            return None
        return pid

    def _containerd_pid(self) -> int | None:
        """Return the pid of this engine's live managed containerd, or None."""
        containerd_dir = self.home / "exec" / "containerd"
        try:
            pid = int((containerd_dir / "containerd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return None
        if not _process_alive(pid):
            return None
        if os.fsencode(str(containerd_dir / "containerd.toml")) not in cmdline:
            return None
        return pid

    def accepts_connections(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError, TimeoutError):
                return False
        return True

    def responds(self) -> bool:
        """Return whether ``GET /_ping`` on the socket returns status 200 within 2 s."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status_line = sock.recv(64).split(b"\r\n", 1)[0]
            except OSError:
                return False
        return status_line.split(b" ")[1:2] == [b"200"]

    def client(self, timeout: int = 60) -> docker.DockerClient:
        """Return a new client for this engine; the caller closes it."""
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def start(self, timeout: float = 120) -> None:
        """Start dockerd with the state it had, wait until it responds and load missing images.

        Does nothing but the image check when the engine is already running. After
        ``stop()`` this can take as long as the longest stop timeout of the containers
        that were still running (see the module docstring).
        """
        _run_script("start-one", self.name, str(self.base_dir), images=self.images,
                    timeout=timeout)

    def stop(self, *, kill_containers: bool = False, timeout: float = 10) -> None:
        """Kill dockerd with SIGKILL, the way a lost node looks, and wait until it is gone.

        Running containers and their shims survive unless ``kill_containers`` is set,
        which also kills each container's init process (and with it the container's
        PID namespace) and its shim, as if the whole machine had died.

        Raises EngineError when the socket still accepts connections after ``timeout``
        seconds.
        """
        pid = self.pid()
        containerd_pid = self._containerd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        # dockerd gives its containerd a parent-death signal, which arrives a moment later.
        # Killing containerd here keeps a quick start() from finding it still alive.
        if containerd_pid is not None:
            os.kill(containerd_pid, signal.SIGKILL)
        killed = [p for p in (pid, containerd_pid) if p is not None]
        if kill_containers:
            killed += self._kill_containers()

        deadline = time.monotonic() + timeout
        while any(_process_alive(p) for p in killed) or self.accepts_connections():
            if time.monotonic() > deadline:
                alive = [p for p in killed if _process_alive(p)]
                raise EngineError(f"{self.name}: processes {alive} still run, or "
                                  f"{self.socket_path} still accepts connections, "
                                  f"{timeout:.0f}s after SIGKILL")
            time.sleep(0.05)

    def freeze(self) -> None:
        """Stop dockerd with SIGSTOP: its socket accepts connections, and nothing responds.

        The containers go on running, as on a host whose engine hangs.
        """
        pid = self.pid()
        if pid is None:
            raise EngineError(f"{self.name}: dockerd is not running, so it cannot be frozen")
        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen dockerd go on (SIGCONT); nothing happens when it is not frozen."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def stop_cleanly(self, timeout: float = 60) -> None:
        """Stop dockerd with SIGTERM, which also stops its running containers."""
        _run_script("stop-one", self.name, str(self.base_dir), images=self.images,
                    timeout=timeout)

    def remove_all_containers(self) -> None:
        """Remove every container on this engine with ``docker rm -f``."""
        client = self.client()
        try:
            for container in client.containers.list(all=True):
                container.remove(force=True)
        finally:
            client.close()

    def _kill_containers(self) -> list[int]:
        """Send SIGKILL to each container's init process and shim; return their pids."""
        killed = []
        containerd_dir = self.home / "exec" / "containerd"
        address = containerd_dir / "containerd.sock"
        if not address.exists():
            raise EngineError(f"{self.name}: {address} is missing, so the engine uses the "
                              f"system containerd and kill_containers is not supported")

        # The task directory of each container that containerd started contains the pid of
        # its init process.
        tasks = containerd_dir / "daemon" / "io.containerd.runtime.v2.task" / self.containerd_namespace
        for task in tasks.iterdir() if tasks.is_dir() else []:
            try:
                init_pid = int((task / "init.pid").read_text().strip())
                cgroups = Path(f"/proc/{init_pid}/cgroup").read_text()
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            # The container id in the process's cgroup path guards against a reused pid.
            if task.name in cgroups:
                os.kill(init_pid, signal.SIGKILL)
                killed.append(init_pid)

        # Shims are matched by the containerd address in their command line, which is
        # unique to this engine.
        for shim_pid in _pids_with_argument(b"-address", os.fsencode(str(address))):
            os.kill(shim_pid, signal.SIGKILL)
            killed.append(shim_pid)
        return killed


def _pids_with_argument(flag: bytes, value: bytes) -> list[int]:
    """Return the pids of live processes whose command line contains ``flag value``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for index, argument in enumerate(arguments[:-1]):
            if argument == flag and arguments[index + 1] == value:
                pids.append(int(entry.name))
                break
    return pids


def start_engines(count: int, base_dir: Path = DEFAULT_BASE_DIR,
                  images: Sequence[str] = DEFAULT_IMAGES, timeout: float = 180) -> list[Engine]:
    """Start engines node-1..node-COUNT under BASE_DIR in parallel and load IMAGES into each.

    Engines that are already running are reused with their containers.
    """
    _run_script("start", str(count), str(base_dir), images=images, timeout=timeout)
    return [Engine(f"node-{index}", base_dir, tuple(images)) for index in range(1, count + 1)]


def stop_engines(base_dir: Path = DEFAULT_BASE_DIR, timeout: float = 60) -> None:
    """Stop every engine under BASE_DIR with SIGTERM, then SIGKILL after 20 s."""
    _run_script("stop", str(base_dir), images=DEFAULT_IMAGES, timeout=timeout)
