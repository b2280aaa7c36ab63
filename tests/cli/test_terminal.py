"""Control characters from stored names and messages never reach the terminal raw."""

from __future__ import annotations

import io
from pathlib import Path

import trio

from cicd.events import model as ev
from cicd.execution.output import LivePrinter
from cicd.storage import EventStore
from cicd.terminal import PrintableStream, printable
from tests.conftest import run_cli

HOSTILE = "x\x1b[2J\x1b]0;title\x07\rfake\x9b\x7f\ud800"


def test_printable_escapes_controls_only() -> None:
    assert printable(HOSTILE) == "x\\x1b[2J\\x1b]0;title\\x07\\x0dfake\\x9b\\x7f\\ud800"
    assert printable("café\tok\nnext ✓") == "café\tok\nnext ✓"


def test_printable_stream_passes_the_rest_through() -> None:
    raw = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    stream = PrintableStream(raw)
    print("a\x1bb", file=stream)  # type: ignore[arg-type]
    stream.flush()
    assert stream.buffer is raw.buffer
    assert raw.buffer.getvalue() == b"a\\x1bb\n"  # type: ignore[attr-defined]


def test_live_prefix_escaped_output_exact() -> None:
    out = io.BytesIO()
    printer = LivePrinter(out, colour=False)
    printer.feed("job", 1, "step\x1b[2J", b"\x1b[32mgreen\x1b[0m\n")
    printer.note("run \x1b]0;t\x07 ended")
    assert out.getvalue() == (b"[job/step\\x1b[2J] \x1b[32mgreen\x1b[0m\n"
                              b"run \\x1b]0;t\\x07 ended\n")


async def _store_hostile_run(db: Path) -> None:
    # As a database written before names were checked, or a message from an engine.
    store = EventStore(db)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        base = {"run_id": "01HOSTILE0000000000000000A"}
        name = HOSTILE.replace("\ud800", "")
        await store.append(ev.RunRequested(**base, pipeline=name, pipeline_yaml="", source="/",
                                           jobs=["a"], executor="local"), wait=True)
        await store.append(ev.JobRequested(**base, job="a", image="busybox", steps=[name]))
        await store.append(ev.RunStarted(**base))
        await store.append(ev.JobFailed(**base, job="a", reason="provider_error",
                                        message=f"no such image: {name}"))
        await store.append(ev.RunFailed(**base, reason=f"jobs did not succeed: {name}"),
                           wait=True)
        await store.close()


def test_runs_and_show_escape_stored_controls(tmp_path: Path) -> None:
    db = tmp_path / "db"
    trio.run(_store_hostile_run, db)
    for args in (("runs", "--db", str(db)), ("show", "--db", str(db), "last")):
        result = run_cli(*args, env={"CICD_SERVER": ""})
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        assert b"x\\x1b[2J\\x1b]0;title\\x07\\x0dfake" in text, text
        assert not any(byte < 0x20 and byte not in b"\n\t" for byte in text), text
