"""The real pipelines of the README: this repository's own, and the third-party example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON_IMAGE, ROOT, require_image, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]

THIRD_PARTY = ROOT / "examples" / "third-party" / "src" / "more_itertools-11.2.1"


def _copy_checkout(target: Path) -> None:
    """Copy the files git would check out (tracked, and new files not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            destination = target / os.fsdecode(name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def test_own_pipeline_succeeds(tmp_path: Path) -> None:
    require_image(PYTHON_IMAGE)
    checkout = tmp_path / "checkout"
    _copy_checkout(checkout)
    report = tmp_path / "report.json"
    result = run_cli("run", str(checkout), "--db", str(tmp_path / "db"), "--report", str(report),
                     timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(report.read_text())
    assert [job["state"] for job in document["jobs"]] == ["succeeded", "succeeded"]
    assert b" passed" in result.stdout


def test_third_party_example_succeeds(tmp_path: Path) -> None:
    require_image(PYTHON_IMAGE)
    if not THIRD_PARTY.is_dir():
        message = "run `bash examples/third-party/fetch` first"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    report = tmp_path / "report.json"
    result = run_cli("run", "-f", str(ROOT / "examples/third-party/more-itertools.cicd.yml"),
                     str(THIRD_PARTY), "--db", str(tmp_path / "db"), "--report", str(report),
                     timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(report.read_text())
    assert {job["id"]: job["state"] for job in document["jobs"]} == {
        "test": "succeeded", "import-check": "succeeded"}
    assert b" passed" in result.stdout
