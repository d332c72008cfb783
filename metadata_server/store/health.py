"""How a store is doing, for /healthz and the log: reachable or not, and since when.

An embedded store (SQLite) is always reachable; a networked one (PostgreSQL) reports
outages here while the server goes on serving guests from memory. Values only: this
module neither probes nor logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from metadata_server.model import iso_time


@dataclass(frozen=True)
class StoreHealth:
    backend: str
    healthy: bool = True
    last_error: str | None = None  # never holds a password: messages use redacted URLs
    since: float | None = None  # wall-clock time the current outage began

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "healthy": self.healthy,
            "last_error": self.last_error,
            "since": iso_time(self.since) if self.since is not None else None,
        }


@runtime_checkable
class ReportsHealth(Protocol):
    @property
    def health(self) -> StoreHealth: ...


def health_of(store: object) -> StoreHealth:
    """The store's own report, or healthy for a store that has no outages (SQLite)."""
    if isinstance(store, ReportsHealth):
        return store.health
    return StoreHealth(backend="sqlite")
