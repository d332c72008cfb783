"""Forward-only schema migrations, one mechanism for every store backend.

Each backend keeps its own numbered list of `Migration`s (SQL differs between engines)
and the same one-row `schema_version` table. On open, a backend reads the version, asks
`plan()` which steps are missing, and runs them with the new version in one transaction
of its own, so a failed step leaves the previous version whole. A database at a newer
version than the code knows is refused before anything is written: an older server must
not touch a schema it does not understand.

This module only plans; it never talks to a database itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metadata_server.errors import ConfigError

VERSION_TABLE_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
READ_VERSION = "SELECT max(version) FROM schema_version"


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class SchemaState:
    """What opening a database did to its schema: `before` 0 is a new database."""

    before: int
    after: int

    @property
    def migrated(self) -> bool:
        return self.after != self.before


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def check_numbering(migrations: Sequence[Migration]) -> None:
    """Versions must run 1, 2, 3, ... without a gap: a programming error otherwise."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise AssertionError(f"migration {migration.version} where {expected} belongs")


def plan(migrations: Sequence[Migration], current: int | None, *, database: str) -> list[Migration]:
    """The steps that bring a database at `current` (None: no version yet) up to date.

    `database` names it in the error (already redacted: no password).
    """
    check_numbering(migrations)
    version = current or 0
    known = latest(migrations)
    if version > known:
        raise ConfigError(
            f"the database {database} is at schema version {version}; this metadata-server "
            f"knows versions up to {known}: upgrade metadata-server (nothing was changed)"
        )
    return [migration for migration in migrations if migration.version > version]


def set_version_statements(version: int) -> tuple[str, str]:
    """Statements (same SQL on every backend) that record `version` as the only row."""
    return (
        "DELETE FROM schema_version",
        f"INSERT INTO schema_version (version) VALUES ({version:d})",  # noqa: S608 (an int formatted as such)
    )
