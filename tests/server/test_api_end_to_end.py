"""The server's API end to end: a real server, Docker engine and SQLite file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from cicd.server.process import Server
from cicd.storage import open_database
from cicd.storage.projections import rebuild_projections
from tests.conftest import BUSYBOX, ROOT
from tests.server.conftest import wait_for_state

pytestmark = pytest.mark.docker

PIPELINE = f"""
name: api-test
jobs:
  build:
    image: {BUSYBOX}
    steps:
      - name: talk
        run: |
          printf 'line one\\n'
          printf 'bytes \\377 end\\n'
          sleep 1
          printf 'last line'
  deploy:
    needs: [build]
    image: {BUSYBOX}
    steps: [{{run: echo deployed}}]
"""


def _body(**extra: object) -> dict[str, object]:
    return {"source": {"dir": str(ROOT / "examples" / "hello")}, "pipeline_yaml": PIPELINE,
            **extra}


async def test_run_lifecycle_and_logs(api: httpx.AsyncClient, server: Server) -> None:
    response = await api.post("/runs", json=_body())
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["state"] in ("pending", "running")
    assert response.headers["location"].endswith(f"/runs/{run['id']}")

    # Follow the live log from the start: the whole output arrives, once.
    path = f"/runs/{run['id']}/jobs/build/steps/talk/log"
    with trio.fail_after(60):
        while (await api.get(f"/runs/{run['id']}")).json()["jobs"] == []:
            await trio.sleep(0.05)
        followed = b""
        async with api.stream("GET", path, params={"follow": 1}) as stream:
            async for chunk in stream.aiter_bytes():
                followed += chunk
    expected = b"line one\nbytes \xff end\nlast line"
    assert followed == expected

    done = await wait_for_state(api, run["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded"
    assert [job["state"] for job in done["jobs"]] == ["succeeded", "succeeded"]

    raw = await api.get(path)
    assert raw.content == expected
    assert raw.headers["x-log-complete"] == "true"
    ranged = await api.get(path, headers={"Range": "bytes=5-12"})
    assert ranged.status_code == 206
    assert ranged.content == expected[5:13]
    resumed = await api.get(path, params={"offset": 9})
    assert resumed.content == expected[9:]

    events = (await api.get("/events", params={"after": 0, "limit": 500})).json()
    names = [e["name"] for e in events["items"] if e["run_id"] == run["id"]]
    assert names[0] == "RunRequested"
    assert names[-1] == "RunCompleted"
    assert {"JobRequested", "AssignmentCreated", "JobStarted", "WorkerCreated", "StepStarted",
            "StepCompleted", "JobCompleted", "WorkerTerminated"} <= set(names)
    started = next(e for e in events["items"] if e["name"] == "JobStarted")
    assert started["job_id"] == started["data"]["job"]
    # data contains what the event adds to the fields every event has, and repeats none.
    assert not {"name", "version", "run_id", "correlation_id", "tenant_id", "ts"} & set(
        started["data"])
    worker = next(e for e in events["items"] if e["name"] == "WorkerCreated")
    assert worker["worker_id"] == worker["data"]["worker"]
    # The metrics label wkm_create_worker_ms by the provider's kind; data.node names the node.
    assert worker["data"]["provider"] == "docker"
    tail = (await api.get("/events", params={"after": events["items"][2]["id"]})).json()
    assert tail["items"][0]["id"] == events["items"][3]["id"]

    nodes = (await api.get("/nodes")).json()
    assert nodes[0]["state"] == "ready"
    assert nodes[0]["max_jobs"] >= 1
    assert nodes[0]["breaker"] == "closed"
    # The metrics subscriber reads the event log a moment after each commit.
    async with httpx.AsyncClient() as plain:
        with trio.fail_after(10):
            while True:
                metrics = await plain.get(f"http://127.0.0.1:{server.port}/metrics")
                if 'cicd_events_total{name="RunCompleted"}' in metrics.text:
                    break
                await trio.sleep(0.1)
    assert "orc_job_latency_ms_bucket" in metrics.text

    trace = (await api.get(f"/runs/{run['id']}/trace")).json()
    spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
    names = sorted(span["name"] for span in spans)
    assert names == ["job build", "job deploy", "run api-test", "schedule build",
                     "schedule deploy", "step build/talk", "step deploy/echo deployed"]
    assert (await api.get("/traces", params={"limit": 1})).json() == trace


async def test_idempotent_under_concurrent_retries(api: httpx.AsyncClient) -> None:
    answers: list[httpx.Response] = []

    async def submit() -> None:
        answers.append(await api.post("/runs", json=_body(), headers={"Idempotency-Key": "k-1"}))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(submit)
    ids = {answer.json()["id"] for answer in answers}
    assert len(ids) == 1
    assert sorted(answer.status_code for answer in answers) == [200] * 19 + [201]
    page = (await api.get("/runs")).json()
    assert [run["id"] for run in page["items"]] == list(ids)

    same_id = await api.post("/runs", json=_body(run_id="client-chosen-1"))
    again = await api.post("/runs", json=_body(run_id="client-chosen-1"))
    assert same_id.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == "client-chosen-1"


async def test_invalid_pipeline_names_line(api: httpx.AsyncClient) -> None:
    body = _body(pipeline_yaml="jobs:\n  a:\n    image: x\n    steps: [{run: 'true', tiemout: 5s}]\n")
    response = await api.post("/runs", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "PIPELINE-INVALID"
    assert error["details"]["line"] == 4
    assert "did you mean 'timeout'" in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


async def test_cancel_retry_and_pagination(api: httpx.AsyncClient, server: Server) -> None:
    slow = f"""
jobs:
  slow:
    image: {BUSYBOX}
    steps: [{{run: "echo started; sleep 60"}}]
  fast:
    image: {BUSYBOX}
    steps: [{{run: "true"}}]
"""
    run = (await api.post("/runs", json=_body(pipeline_yaml=slow))).json()
    with trio.fail_after(60):
        while True:
            document = (await api.get(f"/runs/{run['id']}")).json()
            jobs = {job["id"]: job for job in document["jobs"]}
            if jobs.get("slow", {}).get("state") == "running" and jobs["fast"]["state"] == "succeeded":
                break
            await trio.sleep(0.1)
    unknown = await api.post(f"/runs/{run['id']}/jobs/nope/cancel")
    assert unknown.status_code == 404, unknown.text  # while the run runs, as after it
    assert unknown.json()["code"] == "NOT-FOUND"
    cancel_job = (await api.post(f"/runs/{run['id']}/jobs/slow/cancel")).json()
    assert cancel_job["changed"] is True
    done = await wait_for_state(api, run["id"], {"failed", "cancelled", "succeeded"})
    assert done["state"] == "cancelled"  # a cancelled job and no failed one
    assert done["reason"] == "jobs cancelled: slow"
    assert {job["id"]: job["state"] for job in done["jobs"]} == {"slow": "cancelled",
                                                                 "fast": "succeeded"}
    again = (await api.post(f"/runs/{run['id']}/cancel")).json()
    assert again["changed"] is False
    assert "already ended" in again["message"]

    retry = await api.post(f"/runs/{run['id']}/retry")
    assert retry.status_code == 201, retry.text
    new_run = retry.json()["run"]
    assert new_run["id"] != run["id"]
    with trio.fail_after(60):
        while True:
            document = (await api.get(f"/runs/{new_run['id']}")).json()
            states = {job["id"]: job["state"] for job in document["jobs"]}
            if states.get("slow") == "running":
                break
            await trio.sleep(0.1)
    assert states["fast"] == "skipped"  # it succeeded in the original run
    await api.post(f"/runs/{new_run['id']}/cancel")
    cancelled = await wait_for_state(api, new_run["id"], {"cancelled", "failed", "succeeded"})
    assert cancelled["state"] == "cancelled"

    first = (await api.get("/runs", params={"limit": 1})).json()
    assert [r["id"] for r in first["items"]] == [new_run["id"]]
    second = (await api.get("/runs", params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert [r["id"] for r in second["items"]] == [run["id"]]
    by_state = (await api.get("/runs", params={"state": "cancelled"})).json()
    assert [r["id"] for r in by_state["items"]] == [new_run["id"], run["id"]]
    assert (await api.get("/runs", params={"state": "failed"})).json()["items"] == []

    conn = open_database(server.db_path)
    before = conn.execute("SELECT * FROM steps ORDER BY 1, 2, 3").fetchall()
    rebuild_projections(conn)
    assert conn.execute("SELECT * FROM steps ORDER BY 1, 2, 3").fetchall() == before


async def test_git_source_from_bare_repository(api: httpx.AsyncClient, tmp_path: Path) -> None:
    work = tmp_path / "work"
    bare = tmp_path / "repo.git"
    work.mkdir()
    (work / ".cicd.yml").write_text(
        f"jobs:\n  show:\n    image: {BUSYBOX}\n    steps: [{{run: cat version.txt}}]\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    await trio.run_process([*git[:1], "init", "-q", "-b", "main", str(work)])
    (work / "version.txt").write_text("v1\n")
    await trio.run_process([*git, "-C", str(work), "add", "."])
    await trio.run_process([*git, "-C", str(work), "commit", "-qm", "one"])
    await trio.run_process([*git, "-C", str(work), "tag", "v1"])
    (work / "version.txt").write_text("v2\n")
    await trio.run_process([*git, "-C", str(work), "commit", "-qam", "two"])
    await trio.run_process(["git", "clone", "-q", "--bare", str(work), str(bare)])

    for ref, expected in (("v1", b"v1\n"), ("main", b"v2\n")):
        body = {"source": {"git": f"file://{bare}", "ref": ref}}
        run = (await api.post("/runs", json=body)).json()
        assert run["source_ref"] == ref
        assert run["source_commit"] == ""  # not cloned yet
        done = await wait_for_state(api, run["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded", done
        commit = await trio.run_process(["git", "-C", str(bare), "rev-parse", f"{ref}^{{commit}}"],
                                        capture_stdout=True)
        assert done["source_commit"] == commit.stdout.decode().strip()
        log = await api.get(f"/runs/{run['id']}/jobs/show/steps/1/log")
        assert log.content == expected

    bad = await api.post("/runs", json={"source": {"git": f"file://{bare}", "ref": "nope"}})
    run = bad.json()
    failed = await wait_for_state(api, run["id"], {"failed", "succeeded"})
    assert failed["state"] == "failed"
    assert "nope" in failed["reason"]


async def test_startup_objects_frozen(api: httpx.AsyncClient, server: Server) -> None:
    # Full collections skip what start-up made (see _freeze_startup_objects).
    import gc

    assert (await api.get("/runs")).status_code == 200
    assert gc.get_freeze_count() > 10_000
