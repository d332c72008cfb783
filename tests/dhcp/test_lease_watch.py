"""Following a lease file (dhcp/lease_watch.py): inotify on its directory sees a rewrite,
an append and a rename at once; a lease counts for its guest only at its reservation;
unregistered MACs and wrong addresses are logged once and record nothing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from metadata_server.dhcp.lease_watch import LeaseWatch
from metadata_server.dhcp.leases import LeaseFile

A, B, C = "02:00:c6:12:00:0a", "02:00:c6:12:00:0b", "02:00:c6:12:00:66"
RESERVED = {A: "198.18.0.61", B: "198.18.0.62"}


def line(mac: str, address: str, expiry: int | None = None) -> str:
    return f"{expiry or int(time.time()) + 600} {mac} {address} host *\n"


async def watching(path: Path) -> tuple[LeaseWatch, list[tuple[str, str]]]:
    recorded: list[tuple[str, str]] = []

    async def mark(mac: str, address: str) -> None:
        recorded.append((mac, address))

    watch = LeaseWatch(LeaseFile("dnsmasq", path), RESERVED.get, mark, safety_interval=3600)
    await watch.start()
    return watch, recorded


async def until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.02)


async def test_changes_are_seen_at_once_and_counted_for_their_guests(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dnsmasq.leases"
    watch, recorded = await watching(path)
    try:
        path.write_text(line(A, "198.18.0.61"))  # a new file
        await until(lambda: recorded)
        assert recorded == [(A, "198.18.0.61")]
        new = tmp_path / "dnsmasq.leases.new"  # replaced by a rename
        new.write_text(line(A, "198.18.0.61") + line(B, "198.18.0.62") + line(C, "198.18.0.99"))
        os.replace(new, path)
        await until(lambda: len(recorded) == 2)
        assert recorded[1] == (B, "198.18.0.62")
        with path.open("a") as handle:  # appended: a guest at another address
            handle.write(line(B, "198.18.0.77"))
        await until(lambda: watch.reads >= 4)
        await asyncio.sleep(0.2)
        assert len(recorded) == 2, "the wrong address and the stranger record nothing"
        for _ in range(3):  # rewritten again and again: each thing is said once
            path.write_text(path.read_text())
            await asyncio.sleep(0.1)
        assert caplog.text.count(C) == 1 and caplog.text.count("198.18.0.77") == 1
    finally:
        await watch.stop()


async def test_a_renewal_is_news_and_a_failed_record_is_tried_again(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.leases"
    path.write_text(line(A, "198.18.0.61", 2_000_000_000))
    attempts: list[str] = []

    async def flaky(mac: str, address: str) -> None:
        attempts.append(mac)
        if len(attempts) == 1:
            raise RuntimeError("the registry is busy")

    watch = LeaseWatch(LeaseFile("dnsmasq", path), RESERVED.get, flaky, safety_interval=3600)
    await watch.start()
    try:
        assert attempts == [A] and watch.recorded == 0
        path.write_text(path.read_text())  # the same lease: tried again, as it failed
        await until(lambda: len(attempts) == 2)
        path.write_text(line(A, "198.18.0.61", 2_000_000_600))  # renewed
        await until(lambda: len(attempts) == 3)
        assert watch.recorded == 2
    finally:
        await watch.stop()
