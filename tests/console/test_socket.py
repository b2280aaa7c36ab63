"""The console WebSocket against a real server on 127.0.0.1 (steps as host processes)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from cicd.console import feeds
from cicd.console.protocol import decode_log_frame
from cicd.server.process import Server

pytestmark = pytest.mark.timeout(60)

LINES_PIPELINE = """
version: 1
name: lines
jobs:
  talk:
    image: none
    steps:
      - name: count
        run: |
          i=1; while [ $i -le 40 ]; do printf 'line %d\\n' $i; i=$((i+1)); sleep 0.02; done
"""


@asynccontextmanager
async def console(port: int, **headers: str) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1/console",
                                  extra_headers=list(headers.items()),
                                  max_message_size=1 << 21) as socket:
        hello = json.loads(await socket.get_message())
        assert hello["type"] == "hello"
        assert hello["protocol"] == 1
        yield socket


async def send(socket: WebSocketConnection, **message: Any) -> None:
    await socket.send_message(json.dumps(message))


async def receive(socket: WebSocketConnection) -> dict[str, Any]:
    """Return the next JSON message, skipping pings; a binary log frame becomes a dict."""
    while True:
        with trio.fail_after(30):
            raw = await socket.get_message()
        if isinstance(raw, bytes):
            header, data = decode_log_frame(raw)
            return {"type": "log", "sub": header.sub, "offset": header.offset,
                    "size": header.size, "data": data, "at": time.monotonic()}
        message = json.loads(raw)
        if message["type"] != "ping":
            return dict(message)


async def submit(port: int, source: Path, pipeline: str) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.post("/api/v1/runs", json={
            "source": {"dir": str(source)}, "pipeline_yaml": pipeline})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def wait_state(port: int, run_id: str, states: set[str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        with trio.fail_after(30):
            while True:
                document = (await client.get(f"/api/v1/runs/{run_id}")).json()
                if document["state"] in states:
                    return dict(document)
                await trio.sleep(0.05)


async def full_log(port: int, run_id: str) -> bytes:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get(f"/api/v1/runs/{run_id}/jobs/talk/steps/1/log")
    return response.content


async def collect_log(socket: WebSocketConnection, sub: str) -> tuple[bytes, list[dict[str, Any]]]:
    """Receive a log subscription's frames until its log_end; check they join up."""
    data = b""
    frames = []
    expected: int | None = None
    while True:
        message = await receive(socket)
        assert message["sub"] == sub, message
        if message["type"] == "log_end":
            assert message["size"] == (expected or 0) or expected is None
            return data, frames
        assert message["type"] == "log", message
        if expected is not None:
            assert message["offset"] == expected, "a gap or an overlap between frames"
        data += message["data"]
        expected = message["offset"] + len(message["data"])
        frames.append(message)


async def test_runs_snapshot_then_live_changes(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="list", topic="runs")
        snapshot = await receive(socket)
        assert snapshot["type"] == "runs_snapshot"
        assert snapshot["runs"] == []
        run_id = await submit(port, tmp_path, LINES_PIPELINE)
        seen = []
        while "succeeded" not in seen:
            message = await receive(socket)
            assert message["type"] == "runs_changed"
            assert message["event_id"] > snapshot["event_id"]
            for run in message["runs"]:
                assert run["id"] == run_id
                seen.append(run["state"])
        assert seen[-1] == "succeeded"
        assert message["counts"] == {"succeeded": 1}


async def test_runs_filter_moves_run_out(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="running", topic="runs",
                   filter={"state": "running"})
        assert (await receive(socket))["type"] == "runs_snapshot"
        run_id = await submit(port, tmp_path, LINES_PIPELINE)
        listed = False
        while True:
            message = await receive(socket)
            if any(run["id"] == run_id for run in message["runs"]):
                listed = True
            if run_id in message["removed"] and listed:
                break
        assert message["counts"].get("succeeded", 0) + message["counts"].get("running", 0) == 1


async def test_runs_resume_sends_changes_since(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="a", topic="runs")
        before = (await receive(socket))["event_id"]
    run_id = await submit(port, tmp_path, LINES_PIPELINE)
    await wait_state(port, run_id, {"succeeded"})
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="a", topic="runs", after=before)
        resumed = await receive(socket)
    assert resumed["type"] == "runs_changed"
    assert [run["id"] for run in resumed["runs"]] == [run_id]
    assert resumed["runs"][0]["state"] == "succeeded"
    assert resumed["event_id"] > before


async def test_node_events_change_no_run(local_server: Server, tmp_path: Path) -> None:
    # Cordoning stores a CapacityUpdated event of no run (its run id is empty). It must
    # not reach the runs list as a change, live or on resume.
    port = local_server.port
    assert port is not None
    async with console(port) as socket, httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/api/v1") as api:
        await send(socket, type="subscribe", sub="a", topic="runs")
        before = (await receive(socket))["event_id"]
        node = (await api.get("/nodes")).json()[0]["name"]
        for action in ("cordon", "uncordon"):
            assert (await api.post(f"/nodes/{node}/{action}")).status_code == 200
        run_id = await submit(port, tmp_path, LINES_PIPELINE)
        message = await receive(socket)
        assert message["type"] == "runs_changed"
        assert "" not in message["removed"]
        assert [run["id"] for run in message["runs"]] == [run_id]
    await wait_state(port, run_id, {"succeeded"})
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="a", topic="runs", after=before)
        resumed = await receive(socket)
    assert resumed["removed"] == []
    assert [run["id"] for run in resumed["runs"]] == [run_id]


async def test_run_topic_sends_document(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, LINES_PIPELINE)
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="r", topic="run", run_id=run_id)
        while True:
            message = await receive(socket)
            assert message["type"] == "run"
            assert message["run"]["id"] == run_id
            if message["run"]["state"] == "succeeded":
                break
        assert message["run"]["jobs"][0]["steps"][0]["exit_code"] == 0


async def test_live_log_is_complete_and_coalesced(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, LINES_PIPELINE)
    async with console(port) as socket:
        await wait_state(port, run_id, {"running"})
        await send(socket, type="subscribe", sub="log", topic="log", run_id=run_id,
                   job_id="talk", step="count", offset=0)
        data, frames = await collect_log(socket, "log")
    assert data == b"".join(b"line %d\n" % index for index in range(1, 41))
    assert data == await full_log(port, run_id)
    live = frames[1:]
    gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(live)]
    # Frames of live output are at least 100 ms apart (a little less for timer jitter).
    assert all(gap >= 0.09 for gap in gaps), gaps


async def test_log_resumes_from_offset(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, LINES_PIPELINE)
    await wait_state(port, run_id, {"succeeded"})
    whole = await full_log(port, run_id)
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="tail", topic="log", run_id=run_id,
                   job_id="talk", step="1", offset=100)
        data, _ = await collect_log(socket, "tail")
        await send(socket, type="subscribe", sub="end", topic="log", run_id=run_id,
                   job_id="talk", step="1", offset=len(whole))
        at_end = await receive(socket)
        await send(socket, type="subscribe", sub="past", topic="log", run_id=run_id,
                   job_id="talk", step="1", offset=len(whole) + 1)
        past = await receive(socket)
    assert data == whole[100:]
    assert at_end == {"type": "log_end", "sub": "end", "size": len(whole)}
    assert past["type"] == "error"
    assert past["code"] == "RANGE-NOT-SATISFIABLE"


async def test_slow_client_gets_resync(local_server: Server, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A small shared tail, so the client falls out of it quickly.
    monkeypatch.setattr(feeds, "RING_BYTES", 64 * 1024)
    port = local_server.port
    assert port is not None
    pipeline = """
version: 1
jobs:
  talk:
    image: none
    steps:
      - run: |
          sleep 0.5
          python3 -c "
          import sys, time
          line = b'x' * 79 + b'\\\\n'
          for _ in range(300):
              sys.stdout.buffer.write(line * 1000); sys.stdout.flush(); time.sleep(0.01)
          "
"""
    run_id = await submit(port, tmp_path, pipeline)
    await wait_state(port, run_id, {"running"})
    async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1/console",
                                  max_message_size=1 << 21, message_queue_size=1) as socket:
        await socket.get_message()  # hello
        await send(socket, type="subscribe", sub="slow", topic="log", run_id=run_id,
                   job_id="talk", step="1", offset=0)
        await trio.sleep(0.7)  # read one frame, so the subscription is live
        first = await receive(socket)
        assert first["type"] == "log"
        await trio.sleep(4)  # read nothing while the step writes about 24 MB
        received = first["offset"] + len(first["data"])
        while True:
            message = await receive(socket)
            if message["type"] == "resync":
                break
            assert message["type"] == "log", message
            received = message["offset"] + len(message["data"])
    assert message["sub"] == "slow"
    assert message["offset"] == received
    # The server keeps building: the run still ends normally.
    assert (await wait_state(port, run_id, {"succeeded", "failed"}))["state"] == "succeeded"


async def test_invalid_messages_get_errors(local_server: Server) -> None:
    port = local_server.port
    assert port is not None
    async with console(port) as socket:
        await socket.send_message("{not json")
        error = await receive(socket)
        assert error["type"] == "error"
        assert error["code"] == "REQUEST-INVALID"
        await send(socket, type="subscribe", sub="r", topic="run", run_id="nope")
        missing = await receive(socket)
        assert missing == {"type": "error", "sub": "r", "code": "NOT-FOUND",
                           "message": "run 'nope' not found"}
        await send(socket, type="subscribe", sub="l", topic="log", run_id="nope", job_id="j",
                   step="1")
        assert (await receive(socket))["code"] == "NOT-FOUND"
        await send(socket, type="subscribe", sub="s", topic="runs", filter={"state": "bogus"})
        bogus = await receive(socket)
        assert (bogus["type"], bogus["code"], bogus["sub"]) == ("error", "REQUEST-INVALID", "s")
        assert "'bogus'" in bogus["message"]


async def test_foreign_origin_rejected(local_server: Server) -> None:
    port = local_server.port
    assert port is not None
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1/console",
                                      extra_headers=[("Origin", "http://evil.example")]):
            pass
    assert caught.value.status_code == 403
    async with console(port, Origin=f"http://127.0.0.1:{port}") as socket:
        await send(socket, type="subscribe", sub="n", topic="nodes")
        assert (await receive(socket))["type"] in ("nodes", "error")


async def test_page_and_files_have_csp(local_server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{local_server.port}") as client:
        page = await client.get("/")
        script = await client.get("/static/js/app.js")
        missing = await client.get("/static/js/nope.js")
        traversal = await client.get("/static/..%2Fpyproject.toml")
        hidden = await client.get("/static/.hidden.js")
    assert page.status_code == 200
    assert "<script" in page.text
    assert "onclick" not in page.text
    assert "onerror" not in page.text
    for response in (page, script, missing):
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert missing.status_code == 404
    assert traversal.status_code == 404
    assert hidden.status_code == 404


async def test_console_reads(local_server: Server, tmp_path: Path) -> None:
    port = local_server.port
    assert port is not None
    run_id = await submit(port, tmp_path, LINES_PIPELINE)
    await wait_state(port, run_id, {"succeeded"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/console") as client:
        listed = (await client.get("/runs", params={"pipeline": "lines"})).json()
        other = (await client.get("/runs", params={"ref": "main"})).json()
        overview = (await client.get("/overview", params={"window": "7d"})).json()
        part = await client.get(f"/runs/{run_id}/jobs/talk/steps/count/log",
                                params={"offset": 7, "limit": 9})
        bad = await client.get("/runs", params={"state": "bogus"})
    assert [run["id"] for run in listed["items"]] == [run_id]
    assert listed["counts"] == {"succeeded": 1}
    assert listed["items"][0]["duration_ms"] >= 0
    assert other["items"] == []
    assert overview["counts"] == {"succeeded": 1}
    assert sum(bucket["runs"] for bucket in overview["buckets"]) == 1
    assert part.content == (await full_log(port, run_id))[7:16]
    assert part.headers["X-Log-Offset"] == "7"
    assert part.headers["X-Log-Complete"] == "true"
    assert bad.status_code == 400


async def test_run_topic_sends_growing_output(local_server: Server, tmp_path: Path) -> None:
    # The step's output grows with no event, and the run document follows it.
    port = local_server.port
    assert port is not None
    slow = ("jobs:\n  talk:\n    image: none\n    steps:\n      - name: tick\n"
            "        run: for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done\n")
    run_id = await submit(port, tmp_path, slow)
    await wait_state(port, run_id, {"running"})
    sizes = []
    async with console(port) as socket:
        await send(socket, type="subscribe", sub="r", topic="run", run_id=run_id)
        with trio.fail_after(30):
            while True:
                message = await receive(socket)
                step = message["run"]["jobs"][0]["steps"][0] if message["run"]["jobs"] else None
                if step is not None and step["state"] == "running":
                    sizes.append(step["log_size"])
                if message["run"]["state"] == "succeeded":
                    break
    assert len(set(sizes)) >= 2, sizes
    assert sizes == sorted(sizes)
