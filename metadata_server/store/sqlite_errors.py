"""Which SQLite failures mean the database cannot be used now, and how to say so.

A full disk (SQLITE_FULL) becomes `InsufficientStorage` (507); a read-only or failing
filesystem, a file that cannot be opened, a lock held too long or a damaged file become
`Unavailable` (503). The failed statement's transaction is gone (SQLite rolls it back, the
store makes sure), so every message can say that nothing was changed. Anything else (a
programming error) is left to surface as itself. Classification only: no I/O.
"""

from __future__ import annotations

import sqlite3

from metadata_server.errors import InsufficientStorage, Unavailable

# Primary result codes (the low byte of an extended code such as SQLITE_IOERR_WRITE).
_CANNOT_WRITE = {
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_IOERR: "a disk I/O error (is its filesystem read-only or failing?)",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
    sqlite3.SQLITE_PERM: "access to the database file is denied",
    sqlite3.SQLITE_BUSY: "the database is locked by another process",
    sqlite3.SQLITE_LOCKED: "the database is locked",
    sqlite3.SQLITE_PROTOCOL: "the database's locking failed",
    sqlite3.SQLITE_CORRUPT: "the database file is damaged",
    sqlite3.SQLITE_NOTADB: "the file is not an SQLite database",
}


def storage_error(exc: sqlite3.Error, database: str) -> Unavailable | None:
    """The error to give the caller for `exc`, or None when it is not about storage."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    name = getattr(exc, "sqlite_errorname", None) or str(code)
    primary = code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return InsufficientStorage(
            f"the disk of the registry database {database} is full ({name}); nothing was "
            "changed: free some space and try again"
        )
    reason = _CANNOT_WRITE.get(primary)
    if reason is None:
        return None
    return Unavailable(
        f"the registry database {database} cannot be used: {reason} ({name}); nothing was changed"
    )
