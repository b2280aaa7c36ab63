"""The SQLite store: event log, projections, step logs, migrations."""

from cicd.storage.database import default_db_path, open_database
from cicd.storage.store import EventStore

__all__ = ["EventStore", "default_db_path", "open_database"]
