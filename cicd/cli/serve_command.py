"""``cicd serve``: run the server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import errno

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
    server = Server(settings)
    try:
        trio.run(server.run)
    except BaseExceptionGroup as group:
        in_use, _ = group.split(lambda exc: isinstance(exc, OSError)
                                and exc.errno == errno.EADDRINUSE)
        if in_use is None:
            raise
        address = f"{settings.server.host}:{settings.server.port}"
        raise UsageError(f"cannot listen on {address}: the address is already in use; stop "
                         "the program that uses it or choose another --port") from None
    return 0
