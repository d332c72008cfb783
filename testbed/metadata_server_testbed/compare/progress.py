"""A progress bar on stderr while the harness runs: one line per run, redrawn in place on
a terminal, printed every tenth of the way (and at the end) elsewhere.

`bar()` is pure; `Progress` only writes to the stream it is given.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


def bar(label: str, done: int, total: int, ok: int, failed: int, seconds: float) -> str:
    """`ok`: guests whose boot ended well (the server's records decide `configured`)."""
    filled = WIDTH * done // total if total else WIDTH
    return (
        f"{label} [{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} "
        f"ok {ok} failed {failed} {seconds:.1f} s"
    )


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done = self.configured = self.failed = 0
        self._start = time.monotonic()
        self._printed_tenths = -1

    def update(self, *, configured: bool) -> None:
        self.done += 1
        if configured:
            self.configured += 1
        else:
            self.failed += 1
        self._draw()

    def _draw(self) -> None:
        text = bar(
            self.label,
            self.done,
            self.total,
            self.configured,
            self.failed,
            time.monotonic() - self._start,
        )
        if self.tty:
            self.stream.write("\r" + text + ("\n" if self.done >= self.total else ""))
        else:
            tenths = 10 * self.done // self.total if self.total else 10
            if tenths == self._printed_tenths and self.done < self.total:
                return
            self._printed_tenths = tenths
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (a phase of the run)."""
        self.stream.write(f"{self.label} {text}\n")
        self.stream.flush()
