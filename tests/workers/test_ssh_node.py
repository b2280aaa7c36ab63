"""A node reached over ``ssh://``, for real.

docker-py runs the system's ``ssh`` client, which runs ``docker system dial-stdio``
on the node. A step's attach stream is then a pipe to that process, not a socket.
The test starts its own sshd on 127.0.0.1 with keys of its own. An ``ssh`` wrapper
first on PATH gives the client the test's configuration, so nothing of the user's
ssh setup is read or changed. The node is this host's engine.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import BUSYBOX, labelled_objects, run_cli

pytestmark = pytest.mark.docker

SSHD = "/usr/sbin/sshd"


def _require_sshd() -> None:
    missing = [tool for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"))
               if not tool or not os.path.exists(tool)]
    if missing or os.geteuid() != 0:
        reason = ("sshd, ssh or ssh-keygen is missing (Debian packages openssh-server and "
               "openssh-client)" if missing else "sshd needs root to start")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ssh_node(tmp_path: Path, docker_engine: docker.DockerClient) -> Iterator[tuple[str, Path]]:
    """Start sshd on 127.0.0.1; yield the node's URL and a bin directory for PATH."""
    _require_sshd()
    ssh = tmp_path / "ssh"
    ssh.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)],
                       check=True)
    authorized = ssh / "authorized_keys"
    authorized.write_text((ssh / "client.pub").read_text())
    authorized.chmod(0o600)

    port = _free_port()
    (ssh / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {ssh / 'host'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPasswordAuthentication no\n"
        f"PermitRootLogin prohibit-password\nUsePAM no\nPidFile {ssh / 'sshd.pid'}\n")
    (ssh / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {ssh / 'client'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
        "  LogLevel ERROR\n")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {ssh / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)

    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    log = (tmp_path / "sshd.log").open("wb")
    daemon = subprocess.Popen([SSHD, "-D", "-e", "-f", str(ssh / "sshd_config")],
                              stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert daemon.poll() is None, (tmp_path / "sshd.log").read_text()
                assert time.monotonic() < deadline, "sshd did not listen within 10 s"
                time.sleep(0.05)
        yield f"ssh://{getpass.getuser()}@127.0.0.1:{port}", bin_dir
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        log.close()


PIPELINE = f"""
jobs:
  remote:
    image: {BUSYBOX}
    steps:
      - run: echo one; echo two >&2
      - name: stdin
        run: cat; echo after cat
      - run: printf 'three\\n'; exit 3
      - run: echo never
"""


def test_ssh_node_runs_steps(ssh_node: tuple[str, Path], tmp_path: Path,
                             docker_engine: docker.DockerClient) -> None:
    url, bin_dir = ssh_node
    source = tmp_path / "src"
    source.mkdir()
    (source / ".cicd.yml").write_text(PIPELINE)
    config = tmp_path / "cicd.toml"
    config.write_text(f'[[nodes]]\nname = "over-ssh"\nhost = "{url}"\n')
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("run", str(source), "--config", str(config), "--db",
                     str(tmp_path / "cicd.db"), "--report", str(tmp_path / "report.json"),
                     env=env, timeout=180)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, output  # the third step exits 3
    for line in ("one", "two", "after cat", "three"):
        assert f"] {line}\n" in output, output
    assert "] never" not in output
    report = (tmp_path / "report.json").read_text()
    assert '"node":"over-ssh"' in report.replace(" ", "")
    run_id = report.split('"id":', 1)[1].split('"')[1]
    assert labelled_objects(docker_engine, run_id) == []
