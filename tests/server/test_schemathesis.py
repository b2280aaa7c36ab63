"""Property-based API fuzzing: schemathesis against the served OpenAPI document."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.docker


def test_openapi_fuzz_no_server_errors(server_process: ServerProcess, tmp_path: Path) -> None:
    server_process.start()
    command = shutil.which("schemathesis") or shutil.which("st")
    assert command is not None, "schemathesis is not installed: pip install -e '.[test]'"
    result = subprocess.run(
        [command, "run", f"{server_process.url}/api/v1/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "1",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
         "--workers", "1"],
        capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    server_log = Path(server_process.log_path).read_text()
    assert "Traceback" not in server_log, server_log[-4000:]
    assert sys.executable  # the server ran under this interpreter
