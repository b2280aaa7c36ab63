"""``cicd serve``: run the server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import errno
import socket

import trio

from cicd.config import load_settings
from cicd.errors import UsageError


def serve_command(args: argparse.Namespace) -> int:
    from cicd.server.process import Server

    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "storage.db": args.db,
        "runs.executor": args.executor,
    }
    settings = load_settings(args.config, overrides=overrides)
    _check_address(settings.server.host, settings.server.port)
    server = Server(settings, exit_on_storage_error=True)
    try:
        trio.run(server.run)
    except BaseExceptionGroup as group:
        failed, _ = group.split(lambda exc: _listen_problem(exc) is not None)
        if failed is None:
            raise
        problem = _listen_problem(_first_leaf(failed))
        address = f"{settings.server.host}:{settings.server.port}"
        raise UsageError(f"cannot listen on {address}: {problem}") from None
    return 0


def _check_address(host: str, port: int) -> None:
    """Raise UsageError now when the server could not listen on ``host:port``.

    The server binds its port only after it has taken over unfinished runs, so a busy
    port found then would end a start that had already begun work.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {_listen_problem(exc)}") from None
    for family, kind, protocol, _name, address in infos:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                problem = _listen_problem(exc) or str(exc)
                raise UsageError(f"cannot listen on {host}:{port}: {problem}") from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _listen_problem(exc: BaseException) -> str | None:
    """Say what is wrong with the address the server could not listen on, or None
    for an error that is not about the address."""
    if isinstance(exc, socket.gaierror):
        return ("the host is neither an IP address nor a name this machine resolves; "
                "give --host an address such as 127.0.0.1")
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.EADDRINUSE:
        return ("the address is already in use; stop the program that uses it or choose "
                "another --port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's; give --host one of its addresses"
    if exc.errno == errno.EACCES:
        return "permission denied; ports below 1024 need privileges, choose another --port"
    return None
