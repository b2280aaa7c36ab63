"""Step log routes: slices, HTTP ranges, the followed stream and the log WebSocket."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from cicd.errors import StorageError
from tests.api.conftest import RunningApi, close_of

pytestmark = pytest.mark.timeout(30)

LOG = "/api/v1/runs/r1/jobs/unit/steps/1/log"
OUTPUT = b"0123456789"


@pytest.fixture
def step(api: RunningApi) -> RunningApi:
    api.service.add_run("r1")
    api.service.write_log("r1", "unit", "1", OUTPUT)
    return api


async def test_log_whole_output(step: RunningApi) -> None:
    response = await step.client.get(LOG)
    assert response.status_code == 200
    assert response.content == OUTPUT
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-log-size"] == "10"
    assert response.headers["x-log-complete"] == "false"
    assert response.headers["x-log-truncated"] == "false"
    assert response.headers["x-log-offset"] == "0"
    assert response.headers["accept-ranges"] == "bytes"


async def test_log_complete_after_step_ended(step: RunningApi) -> None:
    step.service.end_step("r1", "unit", "1")
    response = await step.client.get(LOG)
    assert response.headers["x-log-complete"] == "true"


async def test_log_step_by_name(step: RunningApi) -> None:
    response = await step.client.get("/api/v1/runs/r1/jobs/unit/steps/compile/log")
    assert response.status_code == 200
    assert response.content == OUTPUT


async def test_log_offset_and_limit(step: RunningApi) -> None:
    response = await step.client.get(LOG, params={"offset": "3", "limit": "4"})
    assert response.status_code == 200
    assert response.content == b"3456"
    assert response.headers["x-log-offset"] == "3"


async def test_log_offset_at_end_is_empty(step: RunningApi) -> None:
    response = await step.client.get(LOG, params={"offset": "10"})
    assert response.status_code == 200
    assert response.content == b""


async def test_log_offset_past_end_416(step: RunningApi) -> None:
    response = await step.client.get(LOG, params={"offset": "11"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
    assert response.json()["code"] == "RANGE-NOT-SATISFIABLE"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/runs/nope/jobs/unit/steps/1/log", "/api/v1/runs/r1/jobs/lint/steps/1/log",
     "/api/v1/runs/r1/jobs/unit/steps/9/log"],
)
async def test_log_not_found(step: RunningApi, path: str) -> None:
    response = await step.client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT-FOUND"


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=2-5", b"2345", "bytes 2-5/*"),
        ("bytes=4-", b"456789", "bytes 4-9/*"),
        ("bytes=-3", b"789", "bytes 7-9/*"),
        ("bytes=-30", OUTPUT, "bytes 0-9/*"),
        ("bytes=5-100", b"56789", "bytes 5-9/*"),
        ("bytes=9-9", b"9", "bytes 9-9/*"),
    ],
)
async def test_log_range_206(
    step: RunningApi, header: str, body: bytes, content_range: str
) -> None:
    response = await step.client.get(LOG, headers={"Range": header})
    assert response.status_code == 206
    assert response.content == body
    assert response.headers["content-range"] == content_range


async def test_log_range_total_when_complete(step: RunningApi) -> None:
    step.service.end_step("r1", "unit", "1")
    response = await step.client.get(LOG, headers={"Range": "bytes=0-1"})
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 0-1/10"


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=25-30", "bytes=-0"])
async def test_log_range_not_satisfiable_416(step: RunningApi, header: str) -> None:
    response = await step.client.get(LOG, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10"
    assert response.headers["x-log-size"] == "10"
    assert response.json()["code"] == "RANGE-NOT-SATISFIABLE"


async def test_log_range_on_empty_output_416(api: RunningApi) -> None:
    api.service.add_run("r1")
    response = await api.client.get(LOG, headers={"Range": "bytes=0-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=5-2", "bytes=a-b", "bytes=0-1,4-5", "bytes=", "bytes=-"])
async def test_log_range_invalid_400(step: RunningApi, header: str) -> None:
    response = await step.client.get(LOG, headers={"Range": header})
    assert response.status_code == 400
    assert response.json()["code"] == "REQUEST-INVALID"


async def test_log_range_other_unit_ignored(step: RunningApi) -> None:
    response = await step.client.get(LOG, headers={"Range": "lines=0-1"})
    assert response.status_code == 200
    assert response.content == OUTPUT


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"offset": "2"}, {"Range": "bytes=0-1"}),
        ({"follow": "1"}, {"Range": "bytes=0-"}),
        ({"follow": "maybe"}, {}),
        ({"offset": "-1"}, {}),
    ],
)
async def test_log_conflicting_params_400(
    step: RunningApi, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = await step.client.get(LOG, params=params, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "REQUEST-INVALID"


async def test_log_follow_streams_until_step_ends(step: RunningApi) -> None:
    received = bytearray()
    async with step.client.stream("GET", LOG, params={"follow": "1", "offset": "4"}) as response:
        assert response.status_code == 200
        assert response.headers["x-log-offset"] == "4"
        assert "content-length" not in response.headers
        chunks = response.aiter_bytes()
        with trio.fail_after(5):
            received += await chunks.__anext__()
            assert bytes(received) == b"456789"
            step.service.write_log("r1", "unit", "1", b"abc")
            received += await chunks.__anext__()
            step.service.write_log("r1", "unit", "1", b"def")
            step.service.end_step("r1", "unit", "1")
            async for chunk in chunks:
                received += chunk
    assert bytes(received) == b"456789abcdef"
    assert step.service.followers == 0


async def test_log_follow_ended_step_sends_rest(step: RunningApi) -> None:
    step.service.end_step("r1", "unit", "1")
    with trio.fail_after(5):
        response = await step.client.get(LOG, params={"follow": "1", "offset": "8"})
    assert response.status_code == 200
    assert response.content == b"89"


async def test_log_follow_with_limit_ends_early(step: RunningApi) -> None:
    with trio.fail_after(5):
        response = await step.client.get(LOG, params={"follow": "1", "offset": "2", "limit": "5"})
    assert response.status_code == 200
    assert response.content == b"23456"
    assert step.service.followers == 0


async def test_log_follow_errors_before_stream(step: RunningApi) -> None:
    missing = await step.client.get("/api/v1/runs/r1/jobs/unit/steps/7/log", params={"follow": "1"})
    assert missing.status_code == 404
    past_end = await step.client.get(LOG, params={"follow": "1", "offset": "99"})
    assert past_end.status_code == 416
    assert step.service.followers == 0


async def test_log_follow_failure_aborts_response(step: RunningApi) -> None:
    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        async with step.client.stream("GET", LOG, params={"follow": "1"}) as response:
            chunks = response.aiter_bytes()
            assert await chunks.__anext__() == OUTPUT
            step.service.failures["follow_log"] = StorageError("disk full")
            step.service.write_log("r1", "unit", "1", b"more")
            async for _ in chunks:
                pass


async def test_log_follow_cut_at_graceful_timeout(step: RunningApi) -> None:
    # The fixture's server has a 2 s graceful timeout; the step never ends.
    with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
        async with step.client.stream("GET", LOG, params={"follow": "1"}) as response:
            chunks = response.aiter_bytes()
            assert await chunks.__anext__() == OUTPUT
            step.stop.set()
            async for _ in chunks:
                pass
    assert step.service.followers == 0


async def test_log_follow_client_disconnect_closes_stream(step: RunningApi) -> None:
    async with step.client.stream("GET", LOG, params={"follow": "1"}) as response:
        with trio.fail_after(5):
            assert await response.aiter_bytes().__anext__() == OUTPUT
        assert step.service.followers == 1
    with trio.fail_after(5):
        while step.service.followers:
            await trio.sleep(0.01)


async def test_log_websocket_sends_output_and_end(step: RunningApi) -> None:
    url = f"{step.ws_url}{LOG}/stream?offset=2"
    received = bytearray()
    with trio.fail_after(5):
        async with open_websocket_url(url) as ws:
            first = await ws.get_message()
            assert isinstance(first, bytes)
            received += first
            step.service.write_log("r1", "unit", "1", b"ab")
            step.service.end_step("r1", "unit", "1")
            while isinstance(message := await ws.get_message(), bytes):
                received += message
            assert json.loads(message) == {"type": "end", "size": 12}
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert bytes(received) == b"23456789ab"
    assert close_of(closed.value)[0] == 1000


async def test_log_websocket_splits_large_chunks(step: RunningApi) -> None:
    step.service.write_log("r1", "unit", "1", b"x" * 200_000)
    step.service.end_step("r1", "unit", "1")
    sizes = []
    with trio.fail_after(5):
        async with open_websocket_url(f"{step.ws_url}{LOG}/stream") as ws:
            while isinstance(message := await ws.get_message(), bytes):
                sizes.append(len(message))
    assert sum(sizes) == 200_010
    assert max(sizes) == 64 * 1024


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v1/runs/r1/jobs/unit/steps/5/log/stream", 404), (f"{LOG}/stream?offset=11", 416),
     (f"{LOG}/stream?offset=x", 400)],
)
async def test_log_websocket_rejected(step: RunningApi, path: str, status: int) -> None:
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{step.ws_url}{path}"):
            pass
    assert rejected.value.status_code == status
    assert rejected.value.body is not None
    assert json.loads(rejected.value.body)["request_id"]


async def test_log_websocket_service_failure_1011(step: RunningApi) -> None:
    step.service.failures["follow_log"] = StorageError("disk full")
    with trio.fail_after(5):
        async with open_websocket_url(f"{step.ws_url}{LOG}/stream") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    code, reason = close_of(closed.value)
    assert code == 1011
    assert reason.startswith("ORC-INFRA")


async def test_log_websocket_shutdown_closes_1001(step: RunningApi) -> None:
    with trio.fail_after(5):
        async with open_websocket_url(f"{step.ws_url}{LOG}/stream?offset=3") as ws:
            assert await ws.get_message() == b"3456789"
            step.stop.set()
            with trio.fail_after(1), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    code, reason = close_of(closed.value)
    assert code == 1001
    assert reason.endswith("reconnect with offset=10")
