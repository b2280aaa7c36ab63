"""Start-up errors of ``cicd serve`` that the user must be able to read."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def test_port_in_use_gives_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cicd", "serve", "--port", str(port), "--db",
             str(tmp_path / "db"), "--executor", "local"],
            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    # Found before the start does any work: no database, no runs taken over.
    assert not (tmp_path / "db").exists()
    assert "migration" not in result.stderr


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "cicd", "serve", "--db", str(tmp_path / "db"), "--executor",
         "local", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})})


def test_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    for args, env in ((("--port", "99999"), None), (("--port", "-1"), None),
                      ((), {"CICD_SERVER_PORT": "70000"})):
        result = _serve(tmp_path, *args, env=env)
        assert result.returncode == 2, (args, env, result.stderr)
        assert "Traceback" not in result.stderr
        assert "server.port: expected an integer at " in result.stderr, result.stderr


def test_address_of_another_machine_is_a_usage_error(tmp_path: Path) -> None:
    # 192.0.2.1 is a documentation address (RFC 5737): binding to it fails here at
    # once, and nothing is sent anywhere.
    result = _serve(tmp_path, "--host", "192.0.2.1", "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ("cannot listen on 192.0.2.1:0: the address is not one of this machine's"
            in result.stderr)
