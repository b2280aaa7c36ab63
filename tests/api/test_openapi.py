"""The OpenAPI document: valid 3.1, complete against the URL map, true to live responses."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cicd.api import create_app, openapi_document
from tests.api.conftest import RunningApi
from tests.api.fake_service import FakeRunService

pytestmark = pytest.mark.timeout(30)


def _walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _walk_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _walk_refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _validate(document: dict[str, Any], instance: object, schema: dict[str, Any]) -> None:
    # jsonschema comes with openapi-spec-validator, which the project's test extras lack.
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    validator.validate(instance)


def _component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_openapi_is_valid_openapi_31() -> None:
    validator = pytest.importorskip("openapi_spec_validator")  # a test dependency
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validator.validate(document)


def test_openapi_refs_resolve() -> None:
    document = openapi_document()
    refs = _walk_refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/")
        _resolve(document, ref)


def test_openapi_lists_every_route_and_method() -> None:
    app = create_app(FakeRunService())
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        methods = {"get"} if rule.websocket else {
            method.lower() for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}
        }
        routes.setdefault(path, set()).update(methods)
    documented = {path: set(item) for path, item in openapi_document()["paths"].items()}
    assert routes == documented


def test_openapi_marks_websockets() -> None:
    paths = openapi_document()["paths"]
    websockets = sorted(
        path for path, item in paths.items() if item.get("get", {}).get("x-websocket")
    )
    assert websockets == [
        "/api/v1/console", "/api/v1/events/stream",
        "/api/v1/runs/{run_id}/jobs/{job_id}/steps/{step}/log/stream",
    ]


def test_openapi_has_no_worker_operations() -> None:
    for path in openapi_document()["paths"]:
        assert "worker" not in path
        assert "exec" not in path


def test_openapi_operations_list_common_errors() -> None:
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert {"400", "403", "421", "500"} <= set(operation["responses"]), where
            assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], where
            assert operation["operationId"], where


def test_openapi_operation_ids_unique() -> None:
    ids = [operation["operationId"] for item in openapi_document()["paths"].values()
           for operation in item.values()]
    assert len(ids) == len(set(ids))


def test_openapi_path_parameters_declared() -> None:
    document = openapi_document()
    for path, item in document["paths"].items():
        for operation in item.values():
            declared = {
                _resolve(document, p["$ref"])["name"] if "$ref" in p else p["name"]
                for p in operation["parameters"]
            }
            assert set(re.findall(r"{(\w+)}", path)) <= declared, path


def test_openapi_schemas_come_from_structs() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert {"SubmitRequest", "SourceSpec", "RunDocument", "JobDocument", "StepDocument",
            "RunPage", "ActionResult", "EventRecord", "EventPage", "NodeInfo", "ErrorBody",
            "Readiness", "Liveness", "DeadLetter", "ReplayResult"} <= set(schemas)
    assert schemas["SubmitRequest"]["additionalProperties"] is False
    assert schemas["SubmitRequest"]["required"] == ["source"]


async def test_openapi_served(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi_document()


async def test_openapi_matches_live_responses(api: RunningApi) -> None:
    document = openapi_document()
    api.service.add_run("r1", state="failed")
    api.service.add_event("r1")
    api.service.add_dead_letter(1)
    checks = [
        ("GET", "/api/v1/runs/r1", "RunDocument"),
        ("GET", "/api/v1/runs", "RunPage"),
        ("POST", "/api/v1/runs/r1/cancel", "ActionResult"),
        ("POST", "/api/v1/runs/r1/retry", "ActionResult"),
        ("GET", "/api/v1/events", "EventPage"),
        ("GET", "/api/v1/runs/missing", "ErrorBody"),
        ("GET", "/readyz", "Readiness"),
        ("GET", "/healthz", "Liveness"),
        ("POST", "/api/v1/dead-letters/1/replay", "ReplayResult"),
        ("POST", "/api/v1/dead-letters/1/replay", "ReplayResult"),
        ("POST", "/api/v1/dead-letters/9/replay", "ErrorBody"),
    ]
    for method, path, name in checks:
        response = await api.client.request(method, path)
        _validate(document, response.json(), _component(name))
    nodes = (await api.client.get("/api/v1/nodes")).json()
    _validate(document, nodes, {"type": "array", "items": _component("NodeInfo")})
    letters = (await api.client.get("/api/v1/dead-letters")).json()
    assert letters[0]["replayed_at"] is not None
    _validate(document, letters, {"type": "array", "items": _component("DeadLetter")})


def test_openapi_dead_letter_id_is_integer() -> None:
    document = openapi_document()
    operation = document["paths"]["/api/v1/dead-letters/{dead_letter_id}/replay"]["post"]
    parameters = [_resolve(document, p["$ref"]) if "$ref" in p else p
                  for p in operation["parameters"]]
    path_parameters = [p for p in parameters if p["in"] == "path"]
    assert [p["name"] for p in path_parameters] == ["dead_letter_id"]
    assert path_parameters[0]["schema"]["type"] == "integer"
    assert path_parameters[0]["schema"]["minimum"] == 1
    assert "404" in operation["responses"]


def test_openapi_loads_in_schemathesis() -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(openapi_document())
    labels = {operation.ok().label for operation in schema.get_all_operations()}
    assert "POST /api/v1/runs" in labels
    assert "POST /api/v1/dead-letters/{dead_letter_id}/replay" in labels
    assert len(labels) == 29  # 23 of the API, 6 of the browser console
