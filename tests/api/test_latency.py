"""The request latency the API passes to the service for the ui_latency_ms histogram."""

from __future__ import annotations

import logging

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.api.conftest import RunningApi

pytestmark = pytest.mark.timeout(30)

SUBMIT = {"source": {"dir": "/srv/project"}, "pipeline_path": ".cicd.yml"}


async def test_latency_uses_route_rule(api: RunningApi) -> None:
    api.service.add_run("r1")
    response = await api.client.get("/api/v1/runs/r1")
    assert response.status_code == 200
    assert len(api.service.latencies) == 1
    endpoint, tenant, milliseconds = api.service.latencies[0]
    assert endpoint == "GET /api/v1/runs/<run_id>"
    assert tenant == "default"
    assert 0 <= milliseconds < 10_000


async def test_latency_one_call_per_request(api: RunningApi) -> None:
    api.service.add_run("r1")
    api.service.add_dead_letter(3)
    await api.client.post("/api/v1/runs", json=SUBMIT)
    await api.client.post("/api/v1/runs/r1/jobs/unit/cancel")
    await api.client.post("/api/v1/dead-letters/1/replay")
    await api.client.get("/healthz")
    endpoints = [endpoint for endpoint, _, _ in api.service.latencies]
    assert endpoints == [
        "POST /api/v1/runs",
        "POST /api/v1/runs/<run_id>/jobs/<job_id>/cancel",
        "POST /api/v1/dead-letters/<dead_letter_id>/replay",
        "GET /healthz",
    ]


async def test_latency_tenant_from_query(api: RunningApi) -> None:
    await api.client.get("/api/v1/runs", params={"tenant": "acme"})
    await api.client.get("/api/v1/runs", params={"tenant": ""})
    tenants = [tenant for _, tenant, _ in api.service.latencies]
    assert tenants == ["acme", "default"]


async def test_latency_recorded_for_errors(api: RunningApi) -> None:
    missing = await api.client.get("/api/v1/runs/missing")
    invalid = await api.client.get("/api/v1/runs", params={"limit": "0"})
    rejected = await api.client.get("/healthz", headers={"Host": "evil.example"})
    assert (missing.status_code, invalid.status_code, rejected.status_code) == (404, 400, 421)
    endpoints = [endpoint for endpoint, _, _ in api.service.latencies]
    assert endpoints == ["GET /api/v1/runs/<run_id>", "GET /api/v1/runs", "GET /healthz"]


async def test_latency_unmatched_route(api: RunningApi) -> None:
    no_route = await api.client.get("/api/v2/runs/r1")
    wrong_method = await api.client.delete("/api/v1/runs")
    odd_method = await api.client.request("BREW", "/coffee")
    assert (no_route.status_code, wrong_method.status_code) == (404, 405)
    assert odd_method.status_code in {404, 405}
    endpoints = [endpoint for endpoint, _, _ in api.service.latencies]
    assert endpoints == ["unmatched", "unmatched", "unmatched"]


async def test_latency_skips_websockets(api: RunningApi) -> None:
    api.service.add_run("r1")
    api.service.write_log("r1", "unit", "1", b"done\n")
    api.service.end_step("r1", "unit", "1")
    url = f"{api.ws_url}/api/v1/runs/r1/jobs/unit/steps/1/log/stream"
    with trio.fail_after(5):
        async with open_websocket_url(url) as ws:
            assert await ws.get_message() == b"done\n"
    assert api.service.latencies == []


async def test_latency_failure_keeps_response(
    api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="cicd.api"):
        for _ in range(3):
            api.service.failures["record_request_latency"] = RuntimeError("exporter is down")
            response = await api.client.get("/healthz", headers={"X-Request-Id": "slow-1"})
            assert response.status_code == 200
            assert response.json() == {"status": "alive"}
    warnings = [record for record in caplog.records
                if record.name == "cicd.api" and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "slow-1" in warnings[0].getMessage()
    assert "GET /healthz" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None
    debug = [record.getMessage() for record in caplog.records
             if record.name == "cicd.api" and record.levelno == logging.DEBUG]
    assert any("(failure 3)" in message for message in debug)
    assert api.service.latencies == []


async def test_latency_recorded_after_failure(api: RunningApi) -> None:
    api.service.failures["record_request_latency"] = RuntimeError("exporter is down")
    await api.client.get("/healthz")
    await api.client.get("/readyz")
    assert [endpoint for endpoint, _, _ in api.service.latencies] == ["GET /readyz"]
