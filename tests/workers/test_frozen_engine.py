"""An engine that accepts connections and never responds, as a stopped (SIGSTOP) dockerd.

A listening socket that nobody reads takes the engine's place. A real dockerd can be
frozen too, but each probe would then cost the full timeout of a slow test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cicd.scheduling.cluster import Breaker, Cluster, ClusterNode
from cicd.server import nodes
from cicd.workers.docker import DockerProvider


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "frozen.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)  # connections wait in the backlog, and nothing ever responds
    try:
        yield f"unix://{path}"
    finally:
        listener.close()


async def test_capacity_gives_up_with_the_caller(silent_socket: str) -> None:
    provider = DockerProvider(silent_socket, name="frozen")
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError), trio.fail_after(1):
        await provider.capacity()
    assert trio.current_time() - started < 3  # not docker-py's 120 s


async def test_probe_of_frozen_engine_opens_breaker(silent_socket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "PROBE_TIMEOUT", 0.5)
    node = ClusterNode("frozen", DockerProvider(silent_socket, name="frozen"),
                       cpu_millis=4000, memory_bytes=1 << 33, breaker=Breaker(min_calls=2),
                       responded=True)
    cluster = Cluster([node])
    with trio.fail_after(10):
        for _ in range(2):
            await nodes.probe_node(cluster, node, "test")
    assert node.breaker.state == Breaker.OPEN
    assert node.state == "unavailable"
    assert "did not respond within 0.5s" in node.message
