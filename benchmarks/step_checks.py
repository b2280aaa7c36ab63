"""Checks of what the Docker engine offers a step run as a container or as an exec.

Each check runs once on busybox through docker-py and records what the engine
reported, for docs/design/steps.md:

- OOM: a memory-limited container whose step reads 200 MB into ``tail``, run as
  the container's command and as an exec in a long-lived container;
- signals: SIGTERM to a step through the kill API, and to an exec'd step, which has
  no kill endpoint, through its PID and a second exec of ``kill``;
- reattaching: a second client reads a running step container's output, the part
  written before it came included (attach with logs=1 through docker-py and through a
  plain HTTP upgrade, and the logs endpoint with follow); for exec, the first client
  closes its connection right after exec_start, and a second client calls exec_start
  again on a running exec;
- log drivers: lines of 16383, 16384 and 20000 bytes and a line of invalid UTF-8,
  read back through the ``json-file`` and ``local`` log drivers and through attach.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.utils.socket

from benchmarks.engine_socket import demultiplex, upgrade
from benchmarks.measure import (
    IMAGE,
    BenchmarkResult,
    Observation,
    docker_api,
    docker_base_url,
    wait_for_exec,
)

NAME = "step-checks"
TITLE = "Step design: what the engine reports for containers and exec processes"

MEMORY_LIMIT = 64 * 1024 * 1024
# `tail` keeps the last line, and /dev/zero has no newline: tail grows to 200 MB.
MEMORY_HOG = "head -c 200000000 /dev/zero | tail"
# A step that has written output before the second client attaches, and writes more after.
EARLY_AND_LATE = "echo early; sleep 0.5; echo late"
REATTACH_ATTEMPTS = 5
LINE_LENGTHS = (16383, 16384, 20000)
INVALID_UTF8_LINE = b"x\xff\xfey\n"


def _start(api: docker.APIClient, command: list[str], **host_options: Any) -> str:
    host_config = api.create_host_config(init=True, **host_options)
    container = str(api.create_container(IMAGE, command, host_config=host_config)["Id"])
    api.start(container)
    return container


def _read_frames(sock: Any) -> bytes:
    return b"".join(payload for _, payload in docker.utils.socket.frames_iter(sock, tty=False))


def check_oom(api: docker.APIClient) -> list[Observation]:
    limits = {"mem_limit": MEMORY_LIMIT, "memswap_limit": MEMORY_LIMIT}
    container = _start(api, ["sh", "-c", MEMORY_HOG], **limits)
    try:
        code = api.wait(container)["StatusCode"]
        state = api.inspect_container(container)["State"]
    finally:
        api.remove_container(container, force=True)
    as_container = Observation(
        "OOM kill of a step container (64 MiB limit)",
        f"exit code {code}, State.OOMKilled = {state['OOMKilled']}",
        {"exit_code": code, "oom_killed": state["OOMKilled"]})

    since = int(time.time()) - 1
    container = _start(api, ["sleep", "3600"], **limits)
    try:
        exec_id = api.exec_create(container, ["sh", "-c", MEMORY_HOG])["Id"]
        api.exec_start(exec_id)
        exec_code = wait_for_exec(api, exec_id)
        while_running = api.inspect_container(container)["State"]["OOMKilled"]
        api.stop(container, timeout=1)
        after_stop = api.inspect_container(container)["State"]
        # The events API returns once `until` has passed, about a second from now.
        events = list(api.events(since=since, until=int(time.time()) + 1, decode=True,
                                 filters={"container": container, "event": "oom"}))
    finally:
        api.remove_container(container, force=True)
    naming_exec = sum(exec_id in json.dumps(event) for event in events)
    as_exec = Observation(
        "OOM kill of an exec'd step (64 MiB limit on the job container)",
        f"exec_inspect ExitCode {exec_code} (the same as any SIGKILL); State.OOMKilled of the "
        f"running job container = {while_running}; after `docker stop` State.OOMKilled = "
        f"{after_stop['OOMKilled']} with ExitCode {after_stop['ExitCode']}; {len(events)} "
        f"`oom` events name the container, {naming_exec} of them the exec",
        {"exec_exit_code": exec_code, "oom_killed_while_running": while_running,
         "oom_killed_after_stop": after_stop["OOMKilled"],
         "exit_code_after_stop": after_stop["ExitCode"], "oom_events": len(events),
         "oom_events_naming_the_exec": naming_exec})
    return [as_container, as_exec]


def check_signals(api: docker.APIClient) -> list[Observation]:
    container = _start(api, ["sleep", "30"])
    try:
        api.kill(container, signal="SIGTERM")
        code = api.wait(container)["StatusCode"]
    finally:
        api.remove_container(container, force=True)
    as_container = Observation("SIGTERM to a step container", f"kill API; exit code {code}",
                               {"exit_code": code})

    container = _start(api, ["sleep", "3600"])
    try:
        # The step records its PID in the container's namespace for the killer to read.
        step = "echo $$ > /tmp/step.pid; exec sleep 30"
        exec_id = api.exec_create(container, ["sh", "-c", step])["Id"]
        api.exec_start(exec_id, detach=True)
        host_pid, zero_answers = _exec_host_pid(api, exec_id)
        killer = "until [ -s /tmp/step.pid ]; do sleep 0.01; done; kill -TERM $(cat /tmp/step.pid)"
        api.exec_start(api.exec_create(container, ["sh", "-c", killer])["Id"], detach=True)
        code = wait_for_exec(api, exec_id)
    finally:
        api.remove_container(container, force=True)
    as_exec = Observation(
        "SIGTERM to an exec'd step",
        "no kill endpoint for exec; exec_inspect gives the host PID "
        f"{host_pid}{f' after {zero_answers} answers of 0' if zero_answers else ''}; an exec "
        f"of `kill -TERM $(cat /tmp/step.pid)`, with the PID the step wrote, ended it with "
        f"exit code {code}",
        {"exit_code": code, "host_pid": host_pid, "inspections_with_pid_0": zero_answers})
    return [as_container, as_exec]


def _exec_host_pid(api: docker.APIClient, exec_id: str) -> tuple[int, int]:
    """Poll exec_inspect for up to 2 s; return the host PID and how often it was still 0.

    Docker 20.10 returns Pid 0 for some milliseconds after the process has started.
    """
    zero_answers = 0
    deadline = time.monotonic() + 2
    while True:
        pid = int(api.exec_inspect(exec_id)["Pid"])
        if pid or time.monotonic() > deadline:
            return pid, zero_answers
        zero_answers += 1
        time.sleep(0.01)


def check_reattach(new_client: Callable[[], docker.APIClient]) -> list[Observation]:
    observations = []
    expected = b"early\nlate\n"

    def through_docker_py(client: docker.APIClient, container: str) -> bytes:
        sock = client.attach_socket(container, params={"stdout": 1, "stderr": 1, "stream": 1,
                                                       "logs": 1})
        try:
            return _read_frames(sock)
        finally:
            sock.close()

    def through_upgrade(client: docker.APIClient, container: str) -> bytes:
        query = "?logs=1&stream=1&stdout=1&stderr=1"
        return demultiplex(upgrade(client, f"/containers/{container}/attach{query}"))

    def through_logs(client: docker.APIClient, container: str) -> bytes:
        return b"".join(client.logs(container, stdout=True, stderr=True, stream=True,
                                    follow=True))

    for method, attach in (("docker-py 7.1 attach_socket", through_docker_py),
                           ("a plain HTTP upgrade", through_upgrade),
                           ("docker-py 7.1 logs(stream=True, follow=True)", through_logs)):
        outputs = []
        for _ in range(REATTACH_ATTEMPTS):
            first = new_client()
            container = _start(first, ["sh", "-c", EARLY_AND_LATE])
            first.close()
            time.sleep(0.2)  # the step has written "early" and sleeps
            second = new_client()
            try:
                outputs.append(attach(second, container))
                second.wait(container)
            finally:
                second.remove_container(container, force=True)
                second.close()
        complete = sum(output == expected for output in outputs)
        seen = sorted({output.decode("utf-8", "replace") for output in outputs})
        observations.append(Observation(
            f"second client reads a running step container's output, through {method}",
            f"{complete} of {REATTACH_ATTEMPTS} attempts read all of {expected.decode()!r}; "
            f"outputs read: {seen}",
            {"complete": complete, "attempts": REATTACH_ATTEMPTS, "outputs": seen}))

    return observations


def check_exec_reattach(new_client: Callable[[], docker.APIClient]) -> list[Observation]:
    first = new_client()
    container = _start(first, ["sleep", "3600"])
    try:
        # A client that closes its connection right after exec_start, as a server that
        # crashes there would. Each step leaves a file, which shows that it ran.
        exec_ids = []
        for index in range(REATTACH_ATTEMPTS):
            step = f"touch /tmp/ran.{index}; sleep 0.3; echo late-output"
            exec_ids.append(first.exec_create(container, ["sh", "-c", step])["Id"])
            first.exec_start(exec_ids[-1], socket=True).close()
        codes = [wait_for_exec(first, exec_id) for exec_id in exec_ids]
        ran = 0
        for index in range(REATTACH_ATTEMPTS):
            probe = first.exec_create(container, ["test", "-e", f"/tmp/ran.{index}"])["Id"]
            first.exec_start(probe, detach=True)
            ran += wait_for_exec(first, probe) == 0
        closed_early = Observation(
            "first client closes its connection right after exec_start",
            f"exec_inspect exit codes {codes}; {ran} of {REATTACH_ATTEMPTS} steps ran",
            {"exit_codes": codes, "ran": ran})

        exec_id = first.exec_create(container, ["sh", "-c", "sleep 1; echo late-output"])["Id"]
        sock = first.exec_start(exec_id, socket=True)
        time.sleep(0.2)  # closing at once can record exit code 126 (see the check above)
        sock.close()
        first.close()
        second = new_client()
        answer = demultiplex(
            upgrade(second, f"/exec/{exec_id}/start", {"Detach": False, "Tty": False}))
        code = wait_for_exec(second, exec_id)
        container_logs = second.logs(container)
        second.close()
    finally:
        cleanup = new_client()
        cleanup.remove_container(container, force=True)
        cleanup.close()
    exec_start_again = Observation(
        "second client calls exec_start on a running exec",
        f"answer {answer.decode('utf-8', 'replace').strip()!r}; the step's output reaches no "
        f"client ({len(container_logs)} bytes in the container's logs); exec_inspect still "
        f"gives exit code {code}",
        {"answer": answer.decode("utf-8", "replace"), "exit_code": code})
    return [closed_early, exec_start_again]


def check_log_drivers(api: docker.APIClient) -> list[Observation]:
    lines = [bytes([ord("a") + i]) * length + b"\n" for i, length in enumerate(LINE_LENGTHS)]
    script = "".join(f"head -c {length} /dev/zero | tr '\\000' {chr(ord('a') + i)}; echo; "
                     for i, length in enumerate(LINE_LENGTHS))
    script += "printf 'x\\377\\376y\\n'"
    expected = b"".join(lines) + INVALID_UTF8_LINE
    observations = []
    for driver in ("json-file", "local"):
        host_config = api.create_host_config(log_config={"type": driver, "config": {}})
        container = api.create_container(IMAGE, ["sh", "-c", script],
                                         host_config=host_config)["Id"]
        try:
            sock = api.attach_socket(container, params={"stdout": 1, "stderr": 1, "stream": 1})
            api.start(container)
            attached = _read_frames(sock)
            sock.close()
            api.wait(container)
            logged = api.logs(container, stdout=True, stderr=True)
        finally:
            api.remove_container(container, force=True)
        newline_kept = {length: line in logged
                        for length, line in zip(LINE_LENGTHS, lines, strict=True)}
        newlines = ", ".join(f"{length} B: {'kept' if kept else 'lost'}"
                             for length, kept in newline_kept.items())
        utf8 = ("kept" if INVALID_UTF8_LINE in logged else
                "replaced by U+FFFD" if b"\xef\xbf\xbd" in logged else "changed")
        observations.append(Observation(
            f"log driver {driver}",
            f"newline after a line of {newlines}; invalid UTF-8 {utf8}; "
            f"{len(logged)} bytes read back for {len(expected)} written",
            {"newline_kept": newline_kept, "invalid_utf8": utf8, "bytes": len(logged)}))
        observations.append(Observation(
            f"attach stream, container with log driver {driver}",
            "identical to the bytes written" if attached == expected
            else f"differs: {len(attached)} bytes read for {len(expected)} written",
            {"identical": attached == expected}))
    return observations


def run() -> BenchmarkResult:
    """Run every check once: they observe behaviour and time nothing."""
    api = docker_api()
    try:
        version = api.version()
        observations = check_oom(api) + check_signals(api)
        def new_client() -> docker.APIClient:
            return docker.APIClient(base_url=docker_base_url(), timeout=120)

        observations += check_reattach(new_client) + check_exec_reattach(new_client)
        observations += check_log_drivers(api)
    finally:
        api.close()
    engine = f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')})."
    return BenchmarkResult(NAME, TITLE, observations=observations, notes=[engine])
