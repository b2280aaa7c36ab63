"""Opening the SQLite file: pragmas, migrations and the schema version check.

Migrations are the numbered ``NNNN_name.sql`` files of ``migrations/``; the
highest applied number is kept in ``PRAGMA user_version``. A database whose
version is higher than the newest migration this cicd ships was written by a
newer cicd and is rejected rather than misread.
"""

from __future__ import annotations

import fcntl
import importlib.resources
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import IO

from cicd.errors import SchemaTooNewError, StorageError

logger = logging.getLogger("cicd.storage")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def default_db_path() -> Path:
    """Return ``$CICD_DB``, else ``cicd.db`` under the user's data directory."""
    if env := os.environ.get("CICD_DB"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "cicd" / "cicd.db"


def _read_migrations() -> list[tuple[int, str, str]]:
    try:
        files = [(p.name, p) for p in importlib.resources.files("cicd.migrations").iterdir()]
    except ModuleNotFoundError:
        # Running from a source tree without installing: migrations/ is beside cicd/.
        root = Path(__file__).resolve().parents[2] / "migrations"
        files = [(p.name, p) for p in root.iterdir()]
    migrations = []
    for name, path in files:
        match = _MIGRATION_NAME.match(name)
        if match:
            migrations.append((int(match.group(1)), name, path.read_text(encoding="utf-8")))
    migrations.sort()
    return migrations


MIGRATIONS = _read_migrations()
LATEST_VERSION = MIGRATIONS[-1][0] if MIGRATIONS else 0


def open_database(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    The connection may be used from any thread, one thread at a time: callers
    serialize access (the store does it with a capacity limiter of one).
    """
    path = Path(path)
    if readonly and not path.exists():
        raise StorageError(
            f"database {path} does not exist; run a pipeline with `cicd run` first "
            "or pass --db with the file to read"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss; group commit keeps it fast.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    if version > LATEST_VERSION:
        conn.close()
        raise SchemaTooNewError(
            f"database {path} has schema version {version}, newer than the {LATEST_VERSION} "
            "this cicd knows; upgrade cicd, or pass --db with another file"
        )
    if version < LATEST_VERSION:
        if readonly:
            _read_as_latest(conn, version)
        else:
            _migrate(conn, path, version)
    return conn


# A read-only connection does not migrate an older file. These temporary views let
# this version's queries read it anyway: a view shadows the table of the same name,
# because SQLite looks in `temp` first. Keyed by the migration they stand in for.
_READ_COMPAT = {
    6: [("CREATE TEMP VIEW IF NOT EXISTS runs AS SELECT r.*, COALESCE((SELECT MIN(e.id)"
         " FROM main.events e WHERE e.run_id = r.id), 0) AS seq FROM main.runs r")],
}


def _read_as_latest(conn: sqlite3.Connection, version: int) -> None:
    for number, statements in _READ_COMPAT.items():
        if number > version:
            for statement in statements:
                conn.execute(statement)


def _migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    for number, name, sql in MIGRATIONS:
        if number <= version:
            continue
        logger.info("applying migration %s to %s", name, path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            # executescript would commit our transaction first; run statements one by one.
            for statement in _split_statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StorageError(f"migration {name} failed on {path}: {exc}") from exc


def _split_statements(sql: str) -> list[str]:
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def lock_for_server(path: str | os.PathLike[str]) -> IO[bytes] | None:
    """Take the lock that a server holds beside its database while it runs.

    Returns the open lock file, held until it is closed, or None when a server (or
    another holder) has it. Two servers on one file would both take over the same
    unfinished runs, and rebuilding the projections under a server would change its
    tables while it writes them.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{path}.server-lock", "wb")  # noqa: SIM115 - the caller holds it
    except OSError as exc:
        raise StorageError(f"cannot create the lock file {path}.server-lock beside the "
                           f"database: {exc.strerror or exc}; the database's directory "
                           f"must be writable") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock
