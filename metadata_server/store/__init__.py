"""The registry's storage: a small async protocol and its backends.

`open_store(url)` picks the backend from the `--db` value: a path (or `sqlite:///path`)
is the embedded SQLite store; a `postgresql://` (or `postgres://`) URL is the PostgreSQL
store that a cluster of servers shares.
"""

from __future__ import annotations

from pathlib import Path

from metadata_server.store.base import Change, ChangeListener, Store
from metadata_server.store.dsn import is_postgres_url
from metadata_server.store.health import StoreHealth, health_of


def open_store(url: str, *, follow_changes: bool = True) -> Store:
    """Build (not yet open) the store that `url` names.

    `follow_changes=False` skips following other servers' changes (PostgreSQL): for
    one-shot commands that read or write and exit.
    """
    if is_postgres_url(url):
        from metadata_server.store.postgres import PostgresStore

        return PostgresStore(url, follow_changes=follow_changes)
    from metadata_server.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteStore(Path(path))


__all__ = ["Change", "ChangeListener", "Store", "StoreHealth", "health_of", "open_store"]
