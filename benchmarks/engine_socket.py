"""Reading the Docker engine's upgraded (hijacked) streams from its Unix socket directly.

docker-py 7.1 parses an upgrade response through http.client's buffered reader, then
reads the raw socket under it, so stream bytes that arrive together with the response
headers are lost. The step checks use this module to see what the engine sent.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import docker

from benchmarks.measure import BenchmarkError, docker_base_url


def upgrade(api: docker.APIClient, path: str, body: dict[str, Any] | None = None) -> bytes:
    """POST an upgrade request to the engine's Unix socket; return all that follows the headers.

    Reads until the engine closes the connection, so the stream must end by itself.
    """
    base_url = docker_base_url()
    if not base_url.startswith("unix://"):
        raise BenchmarkError(f"step-checks needs the engine on a Unix socket, not {base_url}")
    payload = json.dumps(body).encode() if body is not None else b""
    request = (f"POST /v{api.api_version}{path} HTTP/1.1\r\nHost: docker\r\n"
               "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    received = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(base_url.removeprefix("unix://"))
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchmarkError(f"the engine did not upgrade POST {path}: {head[:200]!r}")
    return rest


def demultiplex(stream: bytes) -> bytes:
    """Return the payloads of a non-TTY attach stream (8-byte header, then the payload)."""
    payloads, offset = [], 0
    while offset + 8 <= len(stream):
        (length,) = struct.unpack(">L", stream[offset + 4:offset + 8])
        payloads.append(stream[offset + 8:offset + 8 + length])
        offset += 8 + length
    return b"".join(payloads)
