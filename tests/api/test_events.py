"""The event page and the event WebSocket: live events, resume after an id, shutdown."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from cicd.errors import StorageError
from tests.api.conftest import RunningApi, close_of

pytestmark = pytest.mark.timeout(30)


def add_events(api: RunningApi, count: int) -> None:
    for index in range(count):
        api.service.add_event(f"r{index}")


async def test_events_page(api: RunningApi) -> None:
    add_events(api, 5)
    response = await api.client.get("/api/v1/events", params={"after": "1", "limit": "3"})
    assert response.status_code == 200
    page = response.json()
    assert [event["id"] for event in page["items"]] == [2, 3, 4]
    assert page["next_after"] == 4
    assert page["items"][0]["run_id"] == "r1"
    assert page["items"][0]["data"] == {"n": 1}


async def test_events_page_defaults(api: RunningApi) -> None:
    add_events(api, 2)
    response = await api.client.get("/api/v1/events")
    assert [event["id"] for event in response.json()["items"]] == [1, 2]


async def test_events_page_empty_keeps_after(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/events", params={"after": "7"})
    assert response.json() == {"items": [], "next_after": 7}


@pytest.mark.parametrize("params", [{"limit": "1001"}, {"limit": "0"}, {"after": "-1"},
                                    {"after": "9007199254740992"}, {"since": "1"}])
async def test_events_page_invalid_params_400(api: RunningApi, params: dict[str, str]) -> None:
    response = await api.client.get("/api/v1/events", params=params)
    assert response.status_code == 400
    assert response.json()["code"] == "REQUEST-INVALID"


async def test_event_stream_sends_stored_then_live(api: RunningApi) -> None:
    add_events(api, 2)
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream") as ws:
            first = json.loads(await ws.get_message())
            second = json.loads(await ws.get_message())
            api.service.add_event("live", name="RunCompleted")
            third = json.loads(await ws.get_message())
    assert [first["id"], second["id"], third["id"]] == [1, 2, 3]
    assert third["name"] == "RunCompleted"
    assert third["run_id"] == "live"
    assert set(third) == {"id", "name", "version", "run_id", "job_id", "step_id", "worker_id",
                          "correlation_id", "tenant_id", "ts", "data"}


async def test_event_stream_resumes_after_id(api: RunningApi) -> None:
    add_events(api, 4)
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream?after=3") as ws:
            message = await ws.get_message()
    assert isinstance(message, str)
    assert json.loads(message)["id"] == 4


async def test_event_stream_handshake_carries_request_id(api: RunningApi) -> None:
    url = f"{api.ws_url}/api/v1/events/stream"
    with trio.fail_after(5):
        async with open_websocket_url(url, extra_headers=[(b"X-Request-Id", b"ws-77")]) as ws:
            headers = dict(ws.handshake_headers)
    assert headers[b"x-request-id"] == b"ws-77"


async def test_event_stream_ignores_client_messages(api: RunningApi) -> None:
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream") as ws:
            for index in range(30):
                await ws.send_message(f"hello {index}")
            api.service.add_event("r1")
            assert json.loads(await ws.get_message())["id"] == 1


async def test_event_stream_disconnect_closes_iterator(api: RunningApi) -> None:
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream") as ws:
            api.service.add_event("r1")
            await ws.get_message()
            assert api.service.followers == 1
        while api.service.followers:
            await trio.sleep(0.01)


@pytest.mark.parametrize("query", ["after=x", "after=-4", "colour=red"])
async def test_event_stream_invalid_query_rejected(api: RunningApi, query: str) -> None:
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream?{query}"):
            pass
    assert rejected.value.status_code == 400
    assert rejected.value.body is not None
    assert json.loads(rejected.value.body)["code"] == "REQUEST-INVALID"


async def test_event_stream_service_failure_1011(api: RunningApi) -> None:
    api.service.failures["follow_events"] = StorageError("database is locked")
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    code, reason = close_of(closed.value)
    assert code == 1011
    assert reason == "ORC-INFRA: database is locked"


async def test_event_stream_unexpected_failure_hides_internals(api: RunningApi) -> None:
    api.service.failures["follow_events"] = RuntimeError("secret internals")
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    code, reason = close_of(closed.value)
    assert code == 1011
    assert reason.startswith("INTERNAL: see the server log, request id ")
    assert "secret" not in reason


async def test_event_stream_shutdown_closes_1001(api: RunningApi) -> None:
    add_events(api, 3)
    with trio.fail_after(5):
        async with open_websocket_url(f"{api.ws_url}/api/v1/events/stream?after=1") as ws:
            await ws.get_message()
            await ws.get_message()
            api.stop.set()
            with trio.fail_after(1), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    code, reason = close_of(closed.value)
    assert code == 1001
    assert reason == "server is shutting down; reconnect with after=3"
    assert api.service.followers == 0
