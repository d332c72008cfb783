"""The store protocol every registry backend implements, and its change events.

Kept small on purpose: whole records in and out, uniqueness enforced by the backend
(MAC, IPv4 address, hostname+domain), all-or-nothing imports, and a change feed that
reports committed changes only. Rules about what a change means live in the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from metadata_server.model import VM, State

log = logging.getLogger(__name__)


class ChangeEvent(StrEnum):
    CREATED = "created"
    UPDATED = "updated"  # the admin changed the record
    STATE = "state"  # only its state moved (a report, a lease, a fetch, a re-arm)
    DELETED = "deleted"


@dataclass(frozen=True)
class Change:
    """One committed change: `vm` is the new record, or None when `mac` was deleted."""

    event: ChangeEvent
    mac: str
    vm: VM | None


ChangeListener = Callable[[Sequence[Change]], None]


class Listeners:
    """The in-process change feed a backend keeps: subscribers hear committed batches."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, changes: Sequence[Change]) -> None:
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:  # a broken listener must not undo a committed change
                log.exception("change listener failed")


class Store(Protocol):
    async def open(self) -> None:
        """Connect, create or migrate the schema. Raises ConfigError when it cannot."""

    async def close(self) -> None: ...

    async def get(self, mac: str) -> VM | None: ...

    async def list(self, *, state: State | None = None, host: str | None = None) -> list[VM]: ...

    async def create(self, vm: VM) -> None:
        """Insert a new record; Conflict when any unique field is taken."""

    async def replace(self, vm: VM, *, event: ChangeEvent = ChangeEvent.UPDATED) -> None:
        """Overwrite the record with `vm.mac`; NotFound when absent, Conflict on a clash."""

    async def delete(self, mac: str) -> bool: ...

    async def import_all(self, vms: Sequence[VM]) -> None:
        """Create or replace every record in one transaction: all of them or none.

        Raises ConflictRows naming every row that clashes with a record outside the
        import or with another row.
        """

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener` with each committed batch; returns the unsubscribe function."""
        ...
