"""Runs, health, nodes and metrics routes, and the error bodies, over a real server."""

from __future__ import annotations

import logging

import pytest

from cicd.errors import (
    CapacityError,
    PipelineError,
    ProviderError,
    ShuttingDown,
    StorageError,
)
from tests.api.conftest import RunningApi

pytestmark = pytest.mark.timeout(30)

SUBMIT = {"source": {"dir": "/srv/project"}, "pipeline_path": ".cicd.yml"}


def assert_error(response_json: dict[str, object], code: str) -> None:
    assert response_json["code"] == code
    assert isinstance(response_json["message"], str) and response_json["message"]
    assert isinstance(response_json["request_id"], str) and response_json["request_id"]


async def test_healthz_alive(api: RunningApi) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert response.headers["content-type"] == "application/json"


async def test_readyz_ready(api: RunningApi) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "components": {"store": "ok", "docker": "ok"}}


async def test_readyz_component_not_ready(api: RunningApi) -> None:
    api.service.components["docker"] = "no Docker engine answers"
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["components"]["docker"] == "no Docker engine answers"
    assert response.json()["status"] == "not_ready"


async def test_readyz_not_accepting(api: RunningApi) -> None:
    api.service.accepting = False
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert "shutting down" in response.json()["components"]["intake"]


async def test_submit_created(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs", json=SUBMIT)
    assert response.status_code == 201
    document = response.json()
    assert response.headers["location"] == f"/api/v1/runs/{document['id']}"
    assert document["state"] == "pending"
    request, key = api.service.submitted[0]
    assert request.source.dir == "/srv/project"
    assert key is None


async def test_submit_access_line_names_run(api: RunningApi,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cicd.api"):
        response = await api.client.post("/api/v1/runs", json=SUBMIT)
    lines = [r.getMessage() for r in caplog.records if r.name == "cicd.api"]
    assert len(lines) == 1
    assert lines[0].startswith("POST /api/v1/runs -> 201 in ")
    assert lines[0].endswith(f", created /api/v1/runs/{response.json()['id']}")


async def test_access_line_escapes_the_path(api: RunningApi,
                                            caplog: pytest.LogCaptureFixture) -> None:
    # A decoded %0A would start a forged log line; %1B would reach the terminal.
    with caplog.at_level(logging.INFO, logger="cicd.api"):
        await api.client.get("/api/v1/runs/x%0A2026-12-05 ERROR cicd.server: forged")
        await api.client.get("/api/v1/runs/%1B%5B2J%00caf%C3%A9")
    lines = [r.getMessage() for r in caplog.records if r.name == "cicd.api"]
    assert lines[0].startswith("GET /api/v1/runs/x%0A2026-12-05%20ERROR%20cicd.server:%20forged ->")
    assert lines[1].startswith("GET /api/v1/runs/%1B%5B2J%00caf%C3%A9 -> 404")
    assert not any(c < " " for line in lines for c in line)


async def test_submit_idempotency_key_repeats_run(api: RunningApi) -> None:
    headers = {"Idempotency-Key": "3f1c9a52-key"}
    first = await api.client.post("/api/v1/runs", json=SUBMIT, headers=headers)
    second = await api.client.post("/api/v1/runs", json=SUBMIT, headers=headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert len(api.service.submitted) == 1
    assert api.service.submitted[0][1] == "3f1c9a52-key"


async def test_submit_same_run_id_returns_200(api: RunningApi) -> None:
    body = {**SUBMIT, "run_id": "nightly-42"}
    first = await api.client.post("/api/v1/runs", json=body)
    second = await api.client.post("/api/v1/runs", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == "nightly-42"
    assert second.headers["location"] == "/api/v1/runs/nightly-42"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
async def test_submit_invalid_idempotency_key(api: RunningApi, key: str) -> None:
    headers = [(b"Idempotency-Key", key.encode())]
    response = await api.client.post("/api/v1/runs", json=SUBMIT, headers=headers)
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert "Idempotency-Key" in response.json()["message"]


async def test_submit_repeated_idempotency_key(api: RunningApi) -> None:
    headers = [(b"Idempotency-Key", b"k2"), (b"Idempotency-Key", b"k3")]
    response = await api.client.post("/api/v1/runs", json=SUBMIT, headers=headers)
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert "given 2 times" in response.json()["message"]
    assert api.service.submitted == []


@pytest.mark.parametrize(("body", "expected"), [
    (b"", "the request body is empty"),
    (b"  \n", "the request body is empty"),
    (b'{"pipeline_yaml": "\\ud800"}', "escapes a lone surrogate"),
    (b'{"source": ', "not valid JSON: Input data was truncated"),
])
async def test_submit_body_errors_say_what_is_wrong(api: RunningApi, body: bytes,
                                                    expected: str) -> None:
    response = await api.client.post("/api/v1/runs", content=body,
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]


async def test_submit_unknown_field_names_path(api: RunningApi) -> None:
    body = {"source": {"dir": "/srv", "branch": "main"}}
    response = await api.client.post("/api/v1/runs", json=body)
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert "unknown field `branch`" in response.json()["message"]
    assert "$.source" in response.json()["message"]


async def test_submit_wrong_type_names_path(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs", json={"source": {"dir": 5}})
    assert response.status_code == 400
    assert "`$.source.dir`" in response.json()["message"]


async def test_submit_missing_field(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs", json={"pipeline_yaml": "jobs: {}"})
    assert response.status_code == 400
    assert "missing required field `source`" in response.json()["message"]


async def test_submit_malformed_json(api: RunningApi) -> None:
    response = await api.client.post(
        "/api/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


async def test_submit_form_body_415(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs", data={"source": "x"})
    assert response.status_code == 415
    assert_error(response.json(), "MEDIA-TYPE")
    assert api.service.submitted == []


async def test_submit_body_too_large_413(api: RunningApi) -> None:
    body = b'{"source": {"dir": "/srv"}, "pipeline_yaml": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = await api.client.post(
        "/api/v1/runs", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert_error(response.json(), "BODY-TOO-LARGE")


async def test_submit_pipeline_error_422(api: RunningApi) -> None:
    api.service.failures["submit"] = PipelineError(
        "unknown key `stepz`", file=".cicd.yml", line=4, column=5, path="jobs.test"
    )
    response = await api.client.post("/api/v1/runs", json=SUBMIT)
    assert response.status_code == 422
    body = response.json()
    assert_error(body, "PIPELINE-INVALID")
    assert body["details"] == {"file": ".cicd.yml", "line": 4, "column": 5, "path": "jobs.test"}
    assert body["message"] == ".cicd.yml:4:5: jobs.test: unknown key `stepz`"


async def test_submit_usage_error_400(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs", json={"source": {}})
    assert response.status_code == 400
    assert_error(response.json(), "USAGE")


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (2.5, "3"), (7.0, "7")])
async def test_submit_capacity_429_retry_after(
    api: RunningApi, retry_after: float, header: str
) -> None:
    api.service.failures["submit"] = CapacityError("intake is full", retry_after=retry_after)
    response = await api.client.post("/api/v1/runs", json=SUBMIT)
    assert response.status_code == 429
    assert response.headers["retry-after"] == header
    assert_error(response.json(), "SCH-CAP")
    assert response.json()["details"] == {"retry_after": int(header)}


async def test_submit_shutting_down_503(api: RunningApi) -> None:
    api.service.failures["submit"] = ShuttingDown("the server is shutting down")
    response = await api.client.post("/api/v1/runs", json=SUBMIT)
    assert response.status_code == 503
    assert_error(response.json(), "SRV-STOPPING")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StorageError("database is locked: /var/lib/cicd/cicd.db"), "ORC-INFRA"),
        (ProviderError("docker at tcp://10.0.0.7:2376 refused"), "WKM-PROV"),
        (RuntimeError("secret internals"), "INTERNAL"),
    ],
)
async def test_server_errors_500_hide_internals(
    api: RunningApi, caplog: pytest.LogCaptureFixture, error: Exception, code: str
) -> None:
    api.service.failures["get_run"] = error
    with caplog.at_level(logging.ERROR, logger="cicd.api"):
        response = await api.client.get("/api/v1/runs/r1", headers={"X-Request-Id": "trace-500"})
    assert response.status_code == 500
    body = response.json()
    assert_error(body, code)
    assert str(error) not in body["message"]
    assert "trace-500" in body["message"]
    logged = [r for r in caplog.records if r.name == "cicd.api" and r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert "trace-500" in logged[0].getMessage()
    assert str(error) in logged[0].getMessage()


async def test_get_run(api: RunningApi) -> None:
    api.service.add_run("r1")
    response = await api.client.get("/api/v1/runs/r1")
    assert response.status_code == 200
    assert response.json()["id"] == "r1"
    assert response.json()["jobs"][0]["steps"][0]["name"] == "compile"


async def test_get_run_not_found(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/runs/missing")
    assert response.status_code == 404
    assert_error(response.json(), "NOT-FOUND")
    assert "missing" in response.json()["message"]


async def test_list_runs_passes_filters(api: RunningApi) -> None:
    api.service.add_run("r1", state="failed", pipeline="deploy", tenant="acme")
    response = await api.client.get(
        "/api/v1/runs",
        params={"state": "failed", "tenant": "acme", "pipeline": "deploy",
                "since": "2023-11-14T22:13:20Z", "limit": "10"},
    )
    assert response.status_code == 200
    assert [run["id"] for run in response.json()["items"]] == ["r1"]
    assert api.service.last_list == {
        "state": "failed", "tenant": "acme", "pipeline": "deploy",
        "since_ms": 1_700_000_000_000, "cursor": None, "limit": 10,
    }


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14", 1_699_920_000_000),
    ],
)
async def test_list_runs_since_formats(api: RunningApi, since: str, expected: int) -> None:
    response = await api.client.get("/api/v1/runs", params={"since": since})
    assert response.status_code == 200
    assert api.service.last_list["since_ms"] == expected


async def test_list_runs_default_limit(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/runs")
    assert response.status_code == 200
    assert api.service.last_list["limit"] == 50


async def test_list_runs_pages_with_cursor(api: RunningApi) -> None:
    for index in range(5):
        api.service.add_run(f"r{index}")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        page = (await api.client.get("/api/v1/runs", params=params)).json()
        seen += [run["id"] for run in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["r4", "r3", "r2", "r1", "r0"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([("limit", "0")], "limit=0 is out of range"),
        ([("limit", "201")], "limit=201 is out of range"),
        ([("limit", "ten")], "limit='ten' is not an integer"),
        ([("state", "done")], "state='done' is not one of"),
        ([("since", "yesterday")], "neither milliseconds"),
        ([("tenant", "")], "'tenant' is empty"),
        ([("colour", "red")], "unknown query parameter 'colour'"),
        ([("limit", "1"), ("limit", "2")], "'limit' is given more than once"),
    ],
)
async def test_list_runs_invalid_params_400(
    api: RunningApi, params: list[tuple[str, str]], fragment: str
) -> None:
    response = await api.client.get("/api/v1/runs", params=tuple(params))
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert fragment in response.json()["message"]


async def test_list_runs_bad_cursor_usage_400(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/runs", params={"cursor": "zzz"})
    assert response.status_code == 400
    assert_error(response.json(), "USAGE")


async def test_cancel_run_idempotent(api: RunningApi) -> None:
    api.service.add_run("r1")
    first = await api.client.post("/api/v1/runs/r1/cancel")
    second = await api.client.post("/api/v1/runs/r1/cancel")
    assert first.status_code == 200
    assert first.json()["changed"] is True
    assert first.json()["run"]["state"] == "cancelled"
    assert second.status_code == 200
    assert second.json()["changed"] is False


async def test_cancel_run_not_found(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/runs/nope/cancel")
    assert response.status_code == 404
    assert_error(response.json(), "NOT-FOUND")


async def test_cancel_job(api: RunningApi) -> None:
    api.service.add_run("r1")
    response = await api.client.post("/api/v1/runs/r1/jobs/unit/cancel")
    assert response.status_code == 200
    assert response.json()["run"]["jobs"][0]["state"] == "cancelled"
    missing = await api.client.post("/api/v1/runs/r1/jobs/lint/cancel")
    assert missing.status_code == 404


async def test_retry_run_created(api: RunningApi) -> None:
    api.service.add_run("r1", state="failed")
    response = await api.client.post("/api/v1/runs/r1/retry")
    assert response.status_code == 201
    assert response.json()["run"]["id"] == "r1-retry"
    assert response.headers["location"] == "/api/v1/runs/r1-retry"


async def test_retry_running_run_conflict_409(api: RunningApi) -> None:
    api.service.add_run("r1", state="running")
    response = await api.client.post("/api/v1/runs/r1/retry")
    assert response.status_code == 409
    assert_error(response.json(), "ORC-STATE")


async def test_nodes(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/nodes")
    assert response.status_code == 200
    assert response.json()[0]["name"] == "local"
    assert response.json()[0]["max_jobs"] == 4


async def test_cordon_and_uncordon_a_node(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/nodes/local/cordon")
    assert response.status_code == 200
    assert response.json()["state"] == "cordoned"
    response = await api.client.post("/api/v1/nodes/local/uncordon")
    assert response.json()["state"] == "ready"
    response = await api.client.post("/api/v1/nodes/elsewhere/drain")
    assert response.status_code == 404
    assert "no node named 'elsewhere'" in response.json()["message"]


async def test_metrics_prometheus_text(api: RunningApi) -> None:
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "cicd_runs_total 3" in response.text


async def test_unknown_route_error_body(api: RunningApi) -> None:
    response = await api.client.get("/api/v2/runs")
    assert response.status_code == 404
    assert_error(response.json(), "NOT-FOUND")


async def test_wrong_method_405_with_allow(api: RunningApi) -> None:
    response = await api.client.delete("/api/v1/runs")
    assert response.status_code == 405
    assert_error(response.json(), "METHOD-NOT-ALLOWED")
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


async def test_plain_get_on_websocket_route_400(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/events/stream")
    assert response.status_code == 400
    assert "WebSocket" in response.json()["message"]


async def test_request_id_echoed(api: RunningApi) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-Id": "abc-123.4:5"})
    assert response.headers["x-request-id"] == "abc-123.4:5"


@pytest.mark.parametrize("sent", ["", "has space", "x" * 200, "<script>", "-leading-dash"])
async def test_request_id_replaced_when_not_sane(api: RunningApi, sent: str) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-Id": sent})
    generated = response.headers["x-request-id"]
    assert generated != sent
    assert len(generated) == 32


async def test_request_id_on_errors_matches_body(api: RunningApi) -> None:
    for response in [
        await api.client.get("/api/v1/runs/missing"),
        await api.client.get("/nowhere"),
        await api.client.get("/api/v1/runs", params={"limit": "x"}),
        await api.client.get("/healthz", headers={"Host": "evil.example"}),
    ]:
        assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_request_ids_differ_per_request(api: RunningApi) -> None:
    first = await api.client.get("/healthz")
    second = await api.client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
