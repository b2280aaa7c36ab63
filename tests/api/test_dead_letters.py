"""The dead letter routes: list and replay, over a real server."""

from __future__ import annotations

import argparse
import logging

import pytest
import trio

from cicd.cli.maintenance import dead_letters_command
from cicd.errors import StorageError
from tests.api.conftest import HOST, RunningApi
from tests.api.test_app import assert_error

pytestmark = pytest.mark.timeout(30)


async def test_list_dead_letters_empty(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/dead-letters")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


async def test_list_dead_letters_in_id_order(api: RunningApi) -> None:
    api.service.add_dead_letter(7, event_name="JobStarted")
    api.service.add_dead_letter(9, subscription="webhooks")
    response = await api.client.get("/api/v1/dead-letters")
    assert response.status_code == 200
    body = response.json()
    assert [letter["id"] for letter in body] == [1, 2]
    assert body[0] == {
        "id": 1, "subscription": "telemetry.metrics", "event_id": 7, "event_name": "JobStarted",
        "attempts": 5, "error": "RuntimeError: exporter is down",
        "failed_at": "2023-11-14T22:13:20.000+00:00", "replayed_at": None,
    }
    assert body[1]["subscription"] == "webhooks"


async def test_list_dead_letters_rejects_query(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/dead-letters", params={"limit": "5"})
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert "unknown query parameter 'limit'" in response.json()["message"]


async def test_list_dead_letters_store_error_500(api: RunningApi) -> None:
    api.service.failures["list_dead_letters"] = StorageError("database is locked")
    response = await api.client.get("/api/v1/dead-letters")
    assert response.status_code == 500
    assert_error(response.json(), "ORC-INFRA")


async def test_replay_dead_letter(api: RunningApi, caplog: pytest.LogCaptureFixture) -> None:
    api.service.add_dead_letter(7)
    with caplog.at_level(logging.INFO, logger="cicd.api"):
        response = await api.client.post(
            "/api/v1/dead-letters/1/replay", headers={"X-Request-Id": "replay-1"}
        )
    assert response.status_code == 200
    assert response.json() == {"replayed": True, "message": "dead letter 1 replayed"}
    assert api.service.dead_letters[1].replayed_at is not None
    messages = [record.getMessage() for record in caplog.records if record.name == "cicd.api"]
    assert "request replay-1 replayed dead letter 1" in messages


async def test_replay_dead_letter_twice(api: RunningApi) -> None:
    api.service.add_dead_letter(7)
    first = await api.client.post("/api/v1/dead-letters/1/replay")
    second = await api.client.post("/api/v1/dead-letters/1/replay")
    assert first.json()["replayed"] is True
    assert second.status_code == 200
    assert second.json() == {
        "replayed": False, "message": "dead letter 1 was replayed already",
    }


async def test_replay_dead_letter_fails_again(api: RunningApi) -> None:
    api.service.add_dead_letter(7)
    api.service.failing_replays.add(1)
    response = await api.client.post("/api/v1/dead-letters/1/replay")
    assert response.status_code == 200
    assert response.json() == {"replayed": False, "message": "dead letter 1 failed again"}
    assert api.service.dead_letters[1].replayed_at is None


async def test_replay_unknown_dead_letter_404(api: RunningApi) -> None:
    response = await api.client.post("/api/v1/dead-letters/42/replay")
    assert response.status_code == 404
    assert_error(response.json(), "NOT-FOUND")
    assert "dead letter 42 not found" in response.json()["message"]


@pytest.mark.parametrize(
    ("dead_letter_id", "fragment"),
    [
        ("abc", "invalid dead letter id 'abc'"),
        ("-1", "invalid dead letter id '-1'"),
        ("1.5", "invalid dead letter id '1.5'"),
        ("%EF%BC%91", "invalid dead letter id '\uff11'"),
        ("0", "dead letter id 0 is out of range"),
        ("9007199254740992", "dead letter id 9007199254740992 is out of range"),
        ("1" * 19, f"invalid dead letter id '{'1' * 19}'"),
    ],
)
async def test_replay_non_integer_id_400(
    api: RunningApi, dead_letter_id: str, fragment: str
) -> None:
    response = await api.client.post(f"/api/v1/dead-letters/{dead_letter_id}/replay")
    assert response.status_code == 400
    assert_error(response.json(), "REQUEST-INVALID")
    assert fragment in response.json()["message"]


async def test_replay_rejects_query(api: RunningApi) -> None:
    api.service.add_dead_letter(7)
    response = await api.client.post("/api/v1/dead-letters/1/replay", params={"force": "1"})
    assert response.status_code == 400
    assert api.service.dead_letters[1].replayed_at is None


async def test_replay_get_405(api: RunningApi) -> None:
    response = await api.client.get("/api/v1/dead-letters/1/replay")
    assert response.status_code == 405
    assert_error(response.json(), "METHOD-NOT-ALLOWED")
    assert response.headers["allow"] == "OPTIONS, POST"


async def test_cli_replay_prints_message(
    api: RunningApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.service.add_dead_letter(7)
    args = argparse.Namespace(replay=1, server=f"http://{HOST}:{api.port}", db=None)
    # The CLI's client is synchronous, so it runs in a thread while the server serves.
    status = await trio.to_thread.run_sync(dead_letters_command, args)
    assert status == 0
    assert capsys.readouterr().out == "dead letter 1 replayed\n"


async def test_cli_lists_dead_letters_of_a_server(api: RunningApi,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    api.service.add_dead_letter(7, event_name="JobStarted")
    args = argparse.Namespace(replay=None, server=f"http://{HOST}:{api.port}", db=None)
    status = await trio.to_thread.run_sync(dead_letters_command, args)
    assert status == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "SUBSCRIBER", "EVENT"]
    assert row.split()[:6] == ["1", "telemetry.metrics", "7", "JobStarted", "5", "2023-11-14"]
    assert row.endswith("no       RuntimeError: exporter is down")
