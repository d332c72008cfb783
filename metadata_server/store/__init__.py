"""The registry's storage: a small async protocol and its backends.

`open_store(url)` picks the backend from the `--db` value: a path (or `sqlite:///path`)
is the embedded SQLite store.
"""

from __future__ import annotations

from pathlib import Path

from metadata_server.errors import ConfigError
from metadata_server.store.base import Change, ChangeListener, Store


def open_store(url: str) -> Store:
    """Build (not yet open) the store that `url` names."""
    if url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("PostgreSQL registries are not supported yet; use an SQLite path")
    from metadata_server.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SQLiteStore(Path(path))


__all__ = ["Change", "ChangeListener", "Store", "open_store"]
