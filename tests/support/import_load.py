"""A guest asking while the admin imports: shared by the import test and its benchmark.

`watch_guest` runs two probes beside an awaitable of admin work: a guest, a shell loop in
a process of its own that runs the real curl on `GET /v1/config` from 127.0.0.1 every
`interval` seconds (each request with a `timeout`, as the guest script has), and a ticker
that sleeps 10 ms on the server's own event loop and records how late it wakes (the
loop's stall, whatever caused it). The guest is a process apart so that a stalled loop
cannot also hold back the guest's next question.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TICK = 0.01


def import_body(rows: int, *, first: int = 0) -> bytes:
    """NDJSON of `rows` valid guests on 10.0.0.0/8, none on the loopback guest's address."""
    from tests.support.records import guest_body

    lines = []
    for n in range(first, first + rows):
        body = guest_body(n, hostname=f"imported{n}")
        body["mac"] = (
            f"02:1e:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
        )
        body["ipv4"] = {
            "address": f"10.{n // 62500 % 250}.{n // 250 % 250}.{n % 250 + 1}",
            "prefix": 8,
        }
        lines.append(json.dumps(body))
    return ("\n".join(lines) + "\n").encode()


@dataclass
class GuestTimes:
    answers: list[tuple[str, float]] = field(default_factory=list)  # (HTTP code, seconds)
    worst_stall: float = 0.0  # the event loop's, in seconds
    duration: float = 0.0  # of the work watched

    @property
    def latencies(self) -> list[float]:
        return [seconds for _, seconds in self.answers]

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def failures(self) -> list[tuple[str, float]]:
        return [(code, seconds) for code, seconds in self.answers if code != "200"]


# $1 URL, $2 stop file, $3 timeout, $4 interval: one line per answer, "CODE SECONDS".
GUEST_LOOP = """
while [ ! -e "$2" ]; do
    curl -s -o /dev/null --max-time "$3" -w '%{http_code} %{time_total}\\n' "$1"
    sleep "$4"
done
"""


async def watch_guest(
    url: str, work: Awaitable[T], *, interval: float = 0.1, timeout: float = 2.0
) -> tuple[T, GuestTimes]:
    """Await `work` while a guest asks `url` in a loop and a ticker measures the loop."""
    times = GuestTimes()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(TICK)
            times.worst_stall = max(times.worst_stall, loop.time() - before - TICK)

    with tempfile.TemporaryDirectory(prefix="guest-loop-") as scratch:
        stop = Path(scratch) / "stop"
        with (Path(scratch) / "answers").open("w+") as answers:
            guest = subprocess.Popen(
                ["sh", "-c", GUEST_LOOP, "sh", url, str(stop), str(timeout), str(interval)],
                stdout=answers,
            )
            ticking = asyncio.create_task(ticker())
            started = time.monotonic()
            try:
                result = await work
            finally:
                times.duration = time.monotonic() - started
                done.set()
                stop.touch()
                await ticking
                await asyncio.to_thread(guest.wait, timeout + interval + 10)
            answers.seek(0)
            for line in answers:
                code, seconds = line.split()
                times.answers.append((code, float(seconds)))
    return result, times
