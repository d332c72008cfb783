"""Waiting for something about one guest to become true: the one way the server waits.

`KeyedWaiters.wait(key, check, timeout)` returns `check()`'s answer as soon as it is not
None: at once when it already is, else after each `wake(key)` (a change to that guest),
until `timeout` seconds have passed (then None). `wake` is called by whoever applies
changes (the registry's change feed, the snapshot), so a waiter looks again only when
something about its guest changed. Pure asyncio: no clock but the event loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class KeyedWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    def wake(self, key: str) -> None:
        for waiter in self._waiting.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._waiting.values())

    async def wait(
        self, key: str, check: Callable[[], T | None], timeout: float | None
    ) -> T | None:
        """`check()`'s first answer that is not None, or None once `timeout` (seconds; None:
        no limit) has passed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            answer = check()
            if answer is not None:
                return answer
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(key, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return check()
            finally:
                waiters = self._waiting.get(key)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiting[key]
