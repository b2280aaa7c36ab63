"""``cicd serve``: run the server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

import trio

from cicd.config import load_settings


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
    trio.run(server.run)
    return 0
