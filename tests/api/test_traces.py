"""The trace routes, over a real HTTP server with the fake service."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import RunningApi
from tests.api.test_app import assert_error

pytestmark = pytest.mark.timeout(30)


def _events(pipeline: str) -> list[tuple[str, int, str]]:
    return [("RunRequested", 100, json.dumps({"pipeline": pipeline})),
            ("RunCompleted", 900, json.dumps({}))]


async def test_run_trace_is_otlp_json(api: RunningApi) -> None:
    api.service.trace_events["01ARZ3NDEKTSV4RRFFQ69G5FAV"] = _events("build")
    response = await api.client.get("/api/v1/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/trace")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    (resource,) = response.json()["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "cicd"}} in (
        resource["resource"]["attributes"])
    (span,) = resource["scopeSpans"][0]["spans"]
    assert span["name"] == "run build"
    assert span["traceId"] == "01563e3ab5d3d6764c61efb99302bd5b"
    assert (span["startTimeUnixNano"], span["endTimeUnixNano"]) == ("100000000", "900000000")
    assert span["status"] == {"code": 1}
    assert span["kind"] == 1  # SPAN_KIND_INTERNAL


async def test_run_trace_unknown_run_404(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/runs/nope/trace")
    assert response.status_code == 404
    assert_error(response.json(), "NOT-FOUND")


async def test_traces_newest_first_with_limit(api: RunningApi) -> None:
    for run_id, pipeline in (("R1", "one"), ("R2", "two"), ("R3", "three")):
        api.service.trace_events[run_id] = _events(pipeline)
    response = await api.client.get("/api/v1/traces", params={"limit": "2"})
    assert response.status_code == 200
    names = [r["scopeSpans"][0]["spans"][0]["name"] for r in response.json()["resourceSpans"]]
    assert names == ["run three", "run two"]
    assert api.service.trace_limits == [2]


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"},
                                   {"run": "R1"}])
async def test_traces_rejects_bad_query(api: RunningApi, query: dict[str, str]) -> None:
    response = await api.client.get("/api/v1/traces", params=query)
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
