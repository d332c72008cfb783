"""Locks for the registry's read-modify-write sequences: one per guest, and one over all.

A state report, a PATCH or a re-arm reads a guest's record and writes it back; two of
them on the same guest must not interleave, but there is no reason for guest A's report
to wait for guest B's (in a boot storm hundreds arrive at once, and each write is a
round trip to the store's thread). A bulk import reads every record it replaces and
writes them in one transaction: it holds all guests, waiting for the per-guest holders to
finish, and new per-guest holders wait for it (it is served first, so a steady stream of
reports cannot starve it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class GuestLocks:
    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._holders = 0  # per-guest holders inside (or queued on a guest's lock)
        self._exclusive = False
        self._exclusive_waiting = 0
        self._per_guest: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def guest(self, mac: str) -> AsyncIterator[None]:
        """Hold guest `mac` alone (others' holders run alongside)."""
        async with self._condition:
            await self._condition.wait_for(
                lambda: not self._exclusive and not self._exclusive_waiting
            )
            self._holders += 1
        self._users[mac] = self._users.get(mac, 0) + 1
        lock = self._per_guest.setdefault(mac, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._users[mac] -= 1
            if not self._users[mac]:
                del self._users[mac], self._per_guest[mac]
            async with self._condition:
                self._holders -= 1
                self._condition.notify_all()

    @contextlib.asynccontextmanager
    async def every_guest(self) -> AsyncIterator[None]:
        """Hold all guests: no per-guest holder runs meanwhile."""
        async with self._condition:
            self._exclusive_waiting += 1
            try:
                await self._condition.wait_for(lambda: not self._exclusive and not self._holders)
            finally:
                self._exclusive_waiting -= 1
                self._condition.notify_all()  # a cancelled wait lets per-guest holders in
            self._exclusive = True
        try:
            yield
        finally:
            async with self._condition:
                self._exclusive = False
                self._condition.notify_all()

    def __len__(self) -> int:
        """Guests with a holder now (tests: nothing is kept for guests no one holds)."""
        return len(self._per_guest)
