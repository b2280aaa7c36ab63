"""Submits that try to crash the server, read its files or leak secrets."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import BUSYBOX
from tests.server.conftest import wait_for_state

pytestmark = pytest.mark.docker

ECHO = f"jobs:\n  a:\n    image: {BUSYBOX}\n    steps: [{{run: echo hi}}]\n"


@pytest.mark.parametrize("tenant", ["", "<script>", "a b", "-x", "t" * 65])
async def test_invalid_tenant_rejected(api: httpx.AsyncClient, tmp_path: Path,
                                          tenant: str) -> None:
    response = await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                             "pipeline_yaml": ECHO, "tenant": tenant})
    assert response.status_code == 400, response.text
    assert f"tenant {tenant!r}" in response.json()["message"]
    assert (await api.get("/runs")).json()["items"] == []


async def test_run_defect_spares_server(api: httpx.AsyncClient, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A defect inside one run (here the engine raising an unexpected error) fails that
    # run; the server and the next run carry on.
    from cicd.orchestration.engine import RunEngine

    real_execute = RunEngine.execute

    async def broken(self: RunEngine, request: object, resume: object = None) -> object:
        if "boom" in getattr(request, "pipeline_yaml", ""):
            raise RuntimeError("engine defect")
        return await real_execute(self, request, resume)  # type: ignore[arg-type]

    monkeypatch.setattr(RunEngine, "execute", broken)
    broken_run = await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                               "pipeline_yaml": ECHO + "# boom\n"})
    assert broken_run.status_code == 201
    document = await wait_for_state(api, broken_run.json()["id"], {"failed", "succeeded"})
    assert document["state"] == "failed"
    assert "internal error: RuntimeError: engine defect" in document["reason"]

    after = await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                          "pipeline_yaml": ECHO})
    done = await wait_for_state(api, after.json()["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded"


async def test_pipeline_symlink_outside_rejected(api: httpx.AsyncClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top-secret-value: 12345\n")
    source = tmp_path / "src"
    source.mkdir()
    os.symlink(secret, source / ".cicd.yml")
    (source / "inside.yml").write_text(ECHO)
    os.symlink(source / "inside.yml", source / "link.yml")

    response = await api.post("/runs", json={"source": {"dir": str(source)}})
    assert response.status_code == 400, response.text
    assert "leads outside the source" in response.json()["message"]
    assert "top-secret" not in response.text

    inside = await api.post("/runs", json={"source": {"dir": str(source)},
                                           "pipeline_path": "link.yml"})
    assert inside.status_code == 201, inside.text


async def test_git_symlink_outside_fails_run(api: httpx.AsyncClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top-secret-value: 12345\n")
    work = tmp_path / "work"
    bare = tmp_path / "repo.git"
    work.mkdir()
    os.symlink(secret, work / ".cicd.yml")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    await trio.run_process([*git[:1], "init", "-q", "-b", "main", str(work)])
    await trio.run_process([*git, "-C", str(work), "add", "."])
    await trio.run_process([*git, "-C", str(work), "commit", "-qm", "one"])
    await trio.run_process(["git", "clone", "-q", "--bare", str(work), str(bare)])

    run = (await api.post("/runs", json={"source": {"git": f"file://{bare}"}})).json()
    document = await wait_for_state(api, run["id"], {"failed", "succeeded"})
    assert document["state"] == "failed"
    assert "leads outside the source" in document["reason"]
    assert "top-secret" not in document["reason"]


@pytest.mark.parametrize("url", ["https://user:s3cretTOKEN@127.0.0.1:1/repo.git",
                                 "https://s3cretTOKEN@127.0.0.1:1/repo.git",
                                 "ssh://git:s3cretTOKEN@127.0.0.1/repo.git"])
async def test_git_url_credentials_rejected(api: httpx.AsyncClient, url: str) -> None:
    response = await api.post("/runs", json={"source": {"git": url}})
    assert response.status_code == 400, response.text
    assert "contains credentials" in response.json()["message"]
    assert "s3cretTOKEN" not in response.text


async def test_ssh_account_name_accepted(api: httpx.AsyncClient) -> None:
    # Only checked, never cloned: the run starts and fails on the unreachable port.
    response = await api.post("/runs", json={"source": {"git": "ssh://git@127.0.0.1:1/r.git"}})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("source", "extra", "expected"), [
    ({"dir": "../../etc"}, {}, "source.dir '../../etc' is a relative path"),
    ({"dir": "."}, {"pipeline_yaml": ECHO}, "source.dir '.' is a relative path"),
    (None, {"pipeline_path": ""}, "pipeline_path is empty"),
])
async def test_ambiguous_sources_rejected(api: httpx.AsyncClient, tmp_path: Path,
                                          source: dict[str, str] | None, extra: dict[str, str],
                                          expected: str) -> None:
    body = {"source": source or {"dir": str(tmp_path)}, **extra}
    response = await api.post("/runs", json=body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"]
    assert (await api.get("/runs")).json()["items"] == []


async def test_pipeline_fifo_rejected_at_once(api: httpx.AsyncClient, tmp_path: Path) -> None:
    # Opening a named pipe would wait for a writer and hold the request forever.
    os.mkfifo(tmp_path / ".cicd.yml")
    with trio.fail_after(10):
        response = await api.post("/runs", json={"source": {"dir": str(tmp_path)}})
    assert response.status_code == 400, response.text
    assert "pipeline file .cicd.yml is not a regular file" in response.json()["message"]


async def test_unknown_cursor_is_rejected(api: httpx.AsyncClient) -> None:
    response = await api.get("/runs", params={"cursor": "zzz"})
    assert response.status_code == 400, response.text
    assert "cursor 'zzz'" in response.json()["message"]
    console = await api.get("/console/runs", params={"cursor": "zzz"})
    assert console.status_code == 400, console.text
    assert console.json()["code"] == "USAGE"


async def test_chosen_run_ids_keep_newest_first(api: httpx.AsyncClient, tmp_path: Path) -> None:
    # Ids chosen by clients sort neither by time nor after the server's own ids: the
    # lists still give runs in the order the server accepted them.
    ids = []
    for run_id in ("zzz-first", None, "aaa-third", None):
        body = {"source": {"dir": str(tmp_path)}, "pipeline_yaml": ECHO}
        if run_id:
            body["run_id"] = run_id
        response = await api.post("/runs", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    for run_id in ids:
        await wait_for_state(api, run_id, {"succeeded", "failed"})
    newest_first = ids[::-1]

    assert [run["id"] for run in (await api.get("/runs")).json()["items"]] == newest_first
    pages, cursor = [], None
    while True:
        page = (await api.get("/runs", params={"limit": 1, **({"cursor": cursor} if cursor
                                                               else {})})).json()
        pages += [run["id"] for run in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == newest_first
    console = (await api.get("/console/runs", params={"limit": 3})).json()
    assert [run["id"] for run in console["items"]] == newest_first[:3]
    assert [run["seq"] for run in console["items"]] == sorted(
        (run["seq"] for run in console["items"]), reverse=True)
    rest = (await api.get("/console/runs", params={"cursor": console["next_cursor"]})).json()
    assert [run["id"] for run in rest["items"]] == newest_first[3:]


async def test_reused_key_other_request_rejected(api: httpx.AsyncClient, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    headers = {"Idempotency-Key": "deploy-42"}
    first = await api.post("/runs", headers=headers,
                           json={"source": {"dir": str(tmp_path)}, "pipeline_yaml": ECHO})
    assert first.status_code == 201
    again = await api.post("/runs", headers=headers,
                           json={"source": {"dir": str(tmp_path)}, "pipeline_yaml": ECHO})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    changed = await api.post("/runs", headers=headers,
                             json={"source": {"dir": str(other)}, "pipeline_yaml": ECHO})
    assert changed.status_code == 422, changed.text
    error = changed.json()
    assert error["code"] == "IDEMPOTENCY-MISMATCH"
    assert "another source" in error["message"]


async def test_reused_run_id_other_request_rejected(api: httpx.AsyncClient,
                                                   tmp_path: Path) -> None:
    # A run_id names one run on the server. Another tenant cannot read that run by
    # sending its id, and a changed request does not get the old run back.
    body = {"source": {"dir": str(tmp_path)}, "pipeline_yaml": ECHO, "run_id": "nightly-7"}
    first = await api.post("/runs", json=body)
    assert first.status_code == 201, first.text
    again = await api.post("/runs", json=body)
    assert again.status_code == 200
    assert again.json()["id"] == "nightly-7"
    for change, field in (({"tenant": "other"}, "tenant_id"),
                          ({"pipeline_yaml": ECHO + "# changed\n"}, "pipeline_yaml")):
        changed = await api.post("/runs", json={**body, **change})
        assert changed.status_code == 422, changed.text
        error = changed.json()
        assert error["code"] == "IDEMPOTENCY-MISMATCH"
        assert "run_id 'nightly-7' was first used for run nightly-7" in error["message"]
        assert f"another {field}" in error["message"]
        assert "run" not in (error.get("details") or {})  # nothing of the run is sent back


async def test_cancelled_queued_run_never_starts(tmp_path: Path, docker_engine: object) -> None:
    # With one run slot, the second run waits. Cancelled while it waits, it must not
    # start when the slot frees, although this process accepted it moments ago.
    from cicd.config import load_settings
    from cicd.server.process import Server

    settings = load_settings(environ={}, overrides={
        "server.port": 0, "storage.db": str(tmp_path / "db"), "runs.per_tenant_runs": 1})
    server = Server(settings)
    slow = f"jobs:\n  a:\n    image: {BUSYBOX}\n    steps: [{{run: sleep 2}}]\n"
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: server.run(install_signal_handlers=False,
                                                           task_status=task_status))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/api/v1",
                                     timeout=30) as api:
            first = (await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                                   "pipeline_yaml": slow})).json()
            await wait_for_state(api, first["id"], {"running"})
            queued = (await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                                    "pipeline_yaml": ECHO})).json()
            # Two cancels at once: one cancels the run, the other finds it done.
            answers: list[dict[str, object]] = []

            async def cancel_it() -> None:
                answers.append((await api.post(f"/runs/{queued['id']}/cancel")).json())

            async with trio.open_nursery() as both:
                both.start_soon(cancel_it)
                both.start_soon(cancel_it)
            assert sorted(answer["changed"] for answer in answers) == [False, True]
            cancel = next(answer for answer in answers if answer["changed"])
            assert cancel["message"] == "cancelled before it started"
            await wait_for_state(api, first["id"], {"succeeded"})
            await trio.sleep(0.5)
            document = (await api.get(f"/runs/{queued['id']}")).json()
            assert document["state"] == "cancelled"
            assert document["started_at"] is None
            assert document["jobs"] == []
        server.request_stop()
        server.request_stop()


def _source_with_special_files(source: Path) -> None:
    source.mkdir()
    (source / "regular.txt").write_text("kept\n")
    os.mkfifo(source / "apipe")
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(source / "asocket"))
    listener.close()  # the socket file stays


async def test_source_special_files_skipped(api: httpx.AsyncClient, tmp_path: Path) -> None:
    """A named pipe or socket in the source is left out of the workspace; the run goes on."""
    source = tmp_path / "src"
    _source_with_special_files(source)
    check = ("cat regular.txt; test ! -e apipe && test ! -e asocket && echo no-special-files")
    pipeline = f"jobs:\n  a:\n    image: {BUSYBOX}\n    steps: [{{run: '{check}'}}]\n"
    response = await api.post("/runs", json={"source": {"dir": str(source)},
                                             "pipeline_yaml": pipeline})
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    document = await wait_for_state(api, run_id, {"succeeded", "failed"})
    assert document["state"] == "succeeded", document
    log = (await api.get(f"/runs/{run_id}/jobs/a/steps/1/log")).content
    assert log == b"kept\nno-special-files\n"


def test_source_tar_skips_special_files(tmp_path: Path) -> None:
    import io
    import tarfile

    from cicd.workers.base import SourceArchive

    source = tmp_path / "src"
    _source_with_special_files(source)
    with tarfile.open(fileobj=io.BytesIO(SourceArchive(str(source)).tar_bytes())) as tar:
        names = sorted(tar.getnames())
    assert names == [".", "./regular.txt"]


async def test_run_defect_ends_jobs_and_steps(api: httpx.AsyncClient, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect in the middle of a job leaves no job or step running in the failed run."""
    from cicd.workers.base import SourceArchive

    def broken(self: SourceArchive, target: str) -> None:
        raise RuntimeError("copy defect")

    monkeypatch.setattr(SourceArchive, "copy_into", broken)
    monkeypatch.setattr(SourceArchive, "tar_bytes", lambda self: broken(self, ""))
    two_steps = f"jobs:\n  a:\n    image: {BUSYBOX}\n    steps: [{{run: echo 1}}, {{run: echo 2}}]\n"
    response = await api.post("/runs", json={"source": {"dir": str(tmp_path)},
                                             "pipeline_yaml": two_steps})
    run_id = response.json()["id"]
    document = await wait_for_state(api, run_id, {"failed", "succeeded"})
    assert document["state"] == "failed"
    assert "copy defect" in document["reason"]
    job = document["jobs"][0]
    assert job["state"] == "failed"
    for step in job["steps"]:
        assert step["state"] in ("failed", "skipped"), document
