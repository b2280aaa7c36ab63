from __future__ import annotations

import trio
import trio.testing

from cicd.server.supervisor import supervise


async def test_supervisor_restarts_then_escalates(autojump_clock: trio.testing.MockClock) -> None:
    health: dict[str, str] = {}
    attempts = 0

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal attempts
        attempts += 1
        task_status.started()
        if attempts <= 8:
            raise RuntimeError(f"boom {attempts}")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "flaky", flaky, health)
        # Five restarts in the window are tolerated; the sixth failure escalates.
        with trio.fail_after(600):
            while not health["flaky"].startswith("failing"):
                await trio.sleep(0.01)
        assert "boom" in health["flaky"]
        with trio.fail_after(600):
            while health["flaky"] != "ok" or attempts < 9:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert attempts == 9


async def test_supervisor_reports_started_once() -> None:
    health: dict[str, str] = {}

    async def steady(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, "steady", steady, health)
        assert health == {"steady": "ok"}
        nursery.cancel_scope.cancel()
