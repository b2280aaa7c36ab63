"""`cicd validate` and `cicd run` print a pipeline error as one line, for any text in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

SURROGATE = 'name: "\\ud800"\njobs:\n  a: {image: busybox, steps: [{run: echo}]}\n'
ESCAPE = 'jobs:\n  a: {image: busybox, steps: [{name: "\\e[2J", run: echo}]}\n'


@pytest.mark.parametrize(("text", "message"), [
    (SURROGATE, "1:7: name: string '\\ud800' contains the lone surrogate \\ud800, "),
    (ESCAPE, "2:38: jobs.a.steps[1].name: step name '\\x1b[2J' contains the control character "),
], ids=["lone surrogate", "escape sequence"])
def test_validate_prints_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / ".cicd.yml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("validate", str(path), timeout=60)
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode("utf-8")
    assert stderr.startswith(f"cicd: invalid pipeline: {path}:{message}")
    assert stderr.count("\n") == 1
    assert stderr[:-1].isprintable()


def test_run_prints_one_line(tmp_path: Path) -> None:
    # The pipeline is checked before any engine or database is opened.
    (tmp_path / ".cicd.yml").write_text(SURROGATE, encoding="utf-8")
    result = run_cli("run", str(tmp_path), "--db", str(tmp_path / "db"), timeout=60)
    assert result.returncode == 2
    stderr = result.stderr.decode("utf-8")
    assert stderr.startswith(f"cicd: invalid pipeline: {tmp_path / '.cicd.yml'}:1:7: name: ")
    assert "lone surrogate \\ud800" in stderr
    assert stderr.count("\n") == 1
    assert not (tmp_path / "db").exists()
