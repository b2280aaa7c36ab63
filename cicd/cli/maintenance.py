"""Operator commands on the database: rebuilding projections, dead letters."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from cicd.errors import UsageError
from cicd.storage import default_db_path, open_database
from cicd.storage.database import lock_for_server
from cicd.storage.projections import rebuild_projections


def rebuild_projections_command(args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else default_db_path()
    lock = lock_for_server(path)
    if lock is None:
        raise UsageError(f"a cicd server uses the database {path}; stop it before rebuilding "
                         "its projections")
    with lock:
        conn = open_database(path)
        started = time.perf_counter()
        count = rebuild_projections(conn)
        print(f"replayed {count} events into the runs, jobs and steps tables of {path} in "
              f"{time.perf_counter() - started:.2f}s")
    return 0


def dead_letters_command(args: argparse.Namespace) -> int:
    if args.replay is not None:
        from cicd.cli.client import Client, _require_server

        client = Client(_require_server(args))
        response = client.request("POST", f"/dead-letters/{args.replay}/replay")
        print(response.json().get("message", "replayed"))
        return 0
    from cicd.cli.client import Client, server_url

    url = server_url(args)
    if url:
        # The same rows, from the server's GET /dead-letters.
        listed = Client(url).request("GET", "/dead-letters").json()
        rows = [(d["id"], d["subscription"], d["event_id"], d["event_name"], d["attempts"],
                 _local_time(d["failed_at"]), d["replayed_at"], d["error"]) for d in listed]
    else:
        path = Path(args.db) if args.db else default_db_path()
        conn = open_database(path, readonly=True)
        rows = [(*row[:5], dt.datetime.fromtimestamp(row[5] / 1000), *row[6:])
                for row in conn.execute(
                    "SELECT d.id, d.subscription, d.event_id, e.name, d.attempts, d.failed_at,"
                    " d.replayed_at, d.error FROM dead_letters d"
                    " JOIN events e ON e.id = d.event_id ORDER BY d.id")]
    if not rows:
        print("no dead letters")
        return 0
    print(f"{'ID':>5} {'SUBSCRIBER':<20} {'EVENT':>8} {'NAME':<18} {'TRIES':>5} "
          f"{'FAILED AT':<19} REPLAYED ERROR")
    for row in rows:
        failed = row[5].strftime("%Y-%m-%d %H:%M:%S")
        print(f"{row[0]:>5} {row[1]:<20} {row[2]:>8} {row[3]:<18} {row[4]:>5} {failed:<19} "
              f"{'yes' if row[6] else 'no':<8} {row[7]}", file=sys.stdout)
    return 0


def _local_time(iso: str) -> dt.datetime:
    """Return an ISO 8601 time of the API in this machine's time zone, without the zone."""
    return dt.datetime.fromisoformat(iso).astimezone().replace(tzinfo=None)
