"""Which PostgreSQL failures are outages, and how to say so in one line without secrets.

An outage (the server is down, restarting, failing over, refusing connections, or a
call timed out) becomes `Unavailable` (503; `InsufficientStorage`, 507, when its disk is
full) at run time and `ConfigError` at start; a message never carries the connection
password. Classification only: no I/O.
"""

from __future__ import annotations

import asyncpg

from metadata_server.errors import InsufficientStorage, Unavailable

# Everything that means "the database cannot be reached or cannot take this now",
# rather than "this request is wrong". A replica that refuses writes after a failover
# (read-only transaction) counts: the primary is elsewhere until the URL points to it.
OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.LockNotAvailableError,
)

# A connection that died under us (server restarted, failed over, session terminated).
BROKEN_CONNECTION: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
)


def reason(exc: BaseException, *, hide: str | None = None) -> str:
    """A short, single-line description of `exc`, with `hide` (a password) masked."""
    if isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    if hide:
        text = text.replace(hide, "***")
    return text


def unavailable(exc: BaseException, *, hide: str | None = None) -> Unavailable:
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return InsufficientStorage(
            f"the registry database's disk is full ({reason(exc, hide=hide)}); nothing was "
            "changed: free some space and try again"
        )
    return Unavailable(
        f"the registry database is unreachable ({reason(exc, hide=hide)}); try again shortly"
    )
