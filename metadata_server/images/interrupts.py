"""Ctrl-C and SIGTERM during image work: both end the work through the same cleanup.

Inside `sigterm_interrupts()` the first SIGINT raises KeyboardInterrupt wherever Python
is, and the first SIGTERM `Terminated` (a KeyboardInterrupt) the same way, so every
try/finally that undoes a mount or a loop device runs for both; later signals are only
noted, so no second Ctrl-C cuts a cleanup short. What must not be cut in two (attaching a loop
device and taking charge of it, a mount, the cleanup itself, the final renames) runs in
`signals_deferred()`: a signal that arrives meanwhile is noted and delivered again once
the section is over. Signal handlers belong to the main thread: elsewhere (a worker
thread of the server, later) both are no-ops, and the caller's own cancellation rules.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt."""


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block the first SIGINT raises KeyboardInterrupt and the first SIGTERM
    Terminated; once one has, later ones are only noted: the work is already being undone,
    and a second Ctrl-C must not cut the cleanup short wherever it lands (even at the
    start of a `finally`, before a deferral takes hold). The previous handlers come back."""
    if not _main_thread():
        yield
        return
    stopping = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {each: signal.signal(each, interrupt) for each in SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


def finish(undo: Callable[[], None]) -> None:
    """Run the cleanup `undo` to its end with signals deferred; if the first signal landed
    just before the deferral took hold, run it once more outside (no later signal raises
    inside `sigterm_interrupts`), then let the interrupt go on."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            undo()
            done = True

    try:
        with signals_deferred():
            once()
    except KeyboardInterrupt:
        once()
        raise


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
        finish(stack.close)
