"""A step's log past ``storage.log_limit``: what plain and offset reads return."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest
import trio

from cicd.config import load_settings
from cicd.server.process import Server
from tests.conftest import BUSYBOX, run_cli
from tests.server.conftest import wait_for_state

pytestmark = pytest.mark.docker

# 200 numbered lines of 9 bytes ("line-001\n"), written slowly and then in one burst,
# so the tail is cut both between chunks and inside one large chunk.
PIPELINE = f"""
jobs:
  a:
    image: {BUSYBOX}
    steps:
      - name: slow
        run: for i in $(seq -w 1 200); do echo line-$i; usleep 2000; done
      - name: burst
        run: for i in $(seq -w 1 200); do echo line-$i; done
"""
OUTPUT = b"".join(b"line-%03d\n" % i for i in range(1, 201))


async def test_plain_read_marks_the_gap(tmp_path: Path, docker_engine: object) -> None:
    settings = load_settings(environ={}, overrides={
        "server.port": 0, "storage.db": str(tmp_path / "db"), "storage.log_limit": "1Ki"})
    server = Server(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: server.run(install_signal_handlers=False,
                                                           task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                     timeout=30) as api:
            run = (await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                                 "pipeline_yaml": PIPELINE})).json()
            done = await wait_for_state(api, run["id"], {"succeeded", "failed"})
            assert done["state"] == "succeeded"
            for step in ("slow", "burst"):
                whole = await api.get(f"/runs/{run['id']}/jobs/a/steps/{step}/log")
                assert whole.headers["x-log-truncated"] == "true"
                head, marker, tail = whole.content.partition(b"\n[cicd: ")
                assert marker, whole.content[-200:]
                assert head == OUTPUT[:512]
                dropped, _, rest = tail.partition(b" bytes of output dropped here")
                tail = rest.partition(b"]\n")[2]
                assert 512 <= len(tail) <= 1024
                assert tail == OUTPUT[-len(tail):]
                assert int(dropped) == len(OUTPUT) - 512 - len(tail)

                first = await api.get(f"/runs/{run['id']}/jobs/a/steps/{step}/log",
                                      params={"offset": 0})
                assert first.content == OUTPUT[:512]
                console = await api.get(f"/console/runs/{run['id']}/jobs/a/steps/{step}/log")
                assert console.headers["x-log-truncated"] == "true"
                # The CLI reading the database shows the same marker line.
                local = await trio.to_thread.run_sync(functools.partial(
                    run_cli, "logs", "--db", str(tmp_path / "db"), run["id"], f"a/{step}",
                    env={"CICD_SERVER": ""}))
                assert local.returncode == 0, local.stderr
                assert local.stdout == whole.content
            untouched = await api.post("/runs", json={
                "source": {"dir": str(tmp_path)},
                "pipeline_yaml": "jobs:\n  b:\n    image: busybox\n    steps: [{run: echo hi}]\n"})
            await wait_for_state(api, untouched.json()["id"], {"succeeded", "failed"})
            console = await api.get(f"/console/runs/{untouched.json()['id']}/jobs/b/steps/1/log")
            assert console.headers["x-log-truncated"] == "false"
        server.request_stop()
        server.request_stop()
