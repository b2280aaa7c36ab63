"""Host and Origin checks (DNS rebinding and cross-site defense), on HTTP and WebSockets."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from cicd.api.guard import HostGuard, normalize_name
from cicd.errors import UsageError
from cicd.security.hosts import ServerNames
from tests.api.conftest import RunningApi, raw_exchange

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST.", "localhost:1", "[::1]",
     "[::1]:8080", "ci.example.test:443"],
)
def test_guard_accepts_server_names(host: str) -> None:
    HostGuard(["127.0.0.1", "localhost", "::1", "ci.example.test"]).check(host, None)


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:3000", "https://ci.example.test", "http://[::1]:8080", "http://127.0.0.1"],
)
def test_guard_accepts_own_origins(origin: str) -> None:
    HostGuard(["127.0.0.1", "localhost", "::1", "ci.example.test"]).check("localhost", origin)


def test_guard_rejects_empty_names() -> None:
    with pytest.raises(UsageError):
        HostGuard([])
    with pytest.raises(UsageError):
        HostGuard(["localhost", " "])


def test_normalize_name_forms() -> None:
    assert normalize_name("[::1]") == "::1"
    assert normalize_name("Example.COM.") == "example.com"


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.2", "localhost.evil.example", "[::2]"]
)
async def test_foreign_host_421(api: RunningApi, host: str) -> None:
    response = await api.client.get("/api/v1/runs", headers={"Host": host})
    assert response.status_code == 421
    body = response.json()
    assert body["code"] == "HOST-NOT-ALLOWED"
    assert "127.0.0.1, localhost, ::1, ci.example.test" in body["message"]
    assert "server_names" in body["message"]
    assert body["details"]["server_names"] == ["127.0.0.1", "localhost", "::1", "ci.example.test"]


async def test_foreign_host_blocks_every_route(api: RunningApi) -> None:
    for method, path in [("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/api/v1/runs"),
                         ("GET", "/api/v1/openapi.json"), ("GET", "/no/such/route")]:
        response = await api.client.request(method, path, headers={"Host": "rebind.example"})
        assert response.status_code == 421, path
    assert api.service.submitted == []


async def test_host_with_case_and_port_allowed(api: RunningApi) -> None:
    response = await api.client.get("/healthz", headers={"Host": f"CI.Example.Test:{api.port}"})
    assert response.status_code == 200


async def test_missing_host_400(api: RunningApi) -> None:
    # HTTP/1.0 allows a request without Host; httpx always sends one.
    head, body = await raw_exchange(api.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert head.split(b" ")[1] == b"400"
    assert b'"code":"HOST-NOT-ALLOWED"' in body
    assert b"no Host header" in body


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost.evil.example", "file://", "%%%"]
)
async def test_foreign_origin_403(api: RunningApi, origin: str) -> None:
    response = await api.client.post(
        "/api/v1/runs", json={"source": {"dir": "/srv"}}, headers={"Origin": origin}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "ORIGIN-NOT-ALLOWED"
    assert "server_names" in response.json()["message"]
    assert api.service.submitted == []


async def test_same_origin_allowed(api: RunningApi) -> None:
    response = await api.client.post(
        "/api/v1/runs", json={"source": {"dir": "/srv"}},
        headers={"Origin": f"http://localhost:{api.port}"},
    )
    assert response.status_code == 201


async def test_cross_origin_preflight_403(api: RunningApi) -> None:
    response = await api.client.options(
        "/api/v1/runs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


async def test_websocket_foreign_origin_rejected(api: RunningApi) -> None:
    url = f"{api.ws_url}/api/v1/events/stream"
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url, extra_headers=[(b"Origin", b"http://evil.example")]):
            pass
    assert rejected.value.status_code == 403
    assert rejected.value.body is not None
    assert b'"code":"ORIGIN-NOT-ALLOWED"' in rejected.value.body
    headers = dict(rejected.value.headers)
    assert headers[b"x-request-id"]
    assert api.service.followers == 0


async def test_websocket_foreign_host_rejected(api: RunningApi) -> None:
    # trio-websocket sets Host from the URL, so send the handshake by hand.
    handshake = (
        b"GET /api/v1/events/stream HTTP/1.1\r\nHost: rebind.example\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head, body = await raw_exchange(api.port, handshake)
    assert head.split(b" ")[1] == b"421"
    assert b'"code":"HOST-NOT-ALLOWED"' in body
    assert b"x-request-id:" in head.lower()
    assert api.service.followers == 0


async def test_websocket_own_origin_accepted(api: RunningApi) -> None:
    api.service.add_event("r1")
    url = f"{api.ws_url}/api/v1/events/stream"
    origin = f"http://127.0.0.1:{api.port}".encode()
    with trio.fail_after(5):
        async with open_websocket_url(url, extra_headers=[(b"Origin", origin)]) as ws:
            message = await ws.get_message()
    assert '"id":1' in message


@pytest.mark.parametrize(
    ("host", "origin", "status", "code"),
    [(None, None, 400, "HOST-NOT-ALLOWED"),
     ("evil.example.test", None, 421, "HOST-NOT-ALLOWED"),
     ("localhost", "null", 403, "ORIGIN-NOT-ALLOWED"),
     ("localhost", "http://evil.example.test", 403, "ORIGIN-NOT-ALLOWED")],
)
def test_server_names_rejection_codes(host: str | None, origin: str | None, status: int,
                                      code: str) -> None:
    rejection = ServerNames(["localhost"]).check(host, origin)
    assert rejection is not None
    assert rejection.status == status
    assert rejection.code == code
    if host is not None:
        assert "server_names in the [server] section" in rejection.message


@pytest.mark.parametrize(("host", "status"), [("localhost:evil", 400), ("localhost:", 400),
                                              ("[::1]x", 400), ("localhost:80:80", 421)])
def test_host_with_invalid_port_rejected(host: str, status: int) -> None:
    rejection = ServerNames(["localhost", "::1"]).check(host, None)
    assert rejection is not None
    assert rejection.status == status
