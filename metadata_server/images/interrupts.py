"""Ctrl-C and SIGTERM during image work: both end the work through the same cleanup.

SIGINT raises KeyboardInterrupt wherever Python is; `sigterm_interrupts()` makes SIGTERM
raise `Terminated` (a KeyboardInterrupt) the same way, so every try/finally that undoes a
mount or a loop device runs for both. What must not be cut in two (attaching a loop
device and taking charge of it, a mount, the cleanup itself, the final renames) runs in
`signals_deferred()`: a signal that arrives meanwhile is noted and delivered again once
the section is over. Signal handlers belong to the main thread: elsewhere (a worker
thread of the server, later) both are no-ops, and the caller's own cancellation rules.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated inside the block; the previous handler comes back."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is over, then are delivered again (to the
    handlers they would have met: an outer deferral, KeyboardInterrupt, Terminated)."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    previous: dict[int, Any] = {}  # what signal.signal() returned
    for each in SIGNALS:
        handler = signal.getsignal(each)
        if handler is not None:  # None: set outside Python, which we cannot restore
            previous[each] = signal.signal(each, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def hold(stack: ExitStack, manager: AbstractContextManager[T]) -> T:
    """Enter `manager` and put its exit on `stack` with no signal in between, so what it
    attached or mounted is always undone by the stack."""
    with signals_deferred():
        return stack.enter_context(manager)


@contextlib.contextmanager
def holdings() -> Iterator[ExitStack]:
    """An ExitStack whose unwinding no signal cuts short (a second Ctrl-C included)."""
    stack = ExitStack()
    try:
        yield stack
    finally:
        with signals_deferred():
            stack.close()
