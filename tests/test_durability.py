"""A server killed with SIGKILL in the middle of a bulk import leaves all of it or none,
and a restarted server serves what was committed."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp

from tests.support.records import guest_body
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

ROWS = 6000


def rows(offset: int) -> str:
    out = []
    for n in range(ROWS):
        body = guest_body(n, hostname=f"g{offset}-{n}")
        body["mac"] = f"02:{offset:02x}:00:00:{n // 256:02x}:{n % 256:02x}"
        body["ipv4"] = {"address": f"10.{offset}.{n // 250}.{n % 250 + 1}", "prefix": 8}
        out.append(json.dumps(body))
    return "\n".join(out)


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM vms").fetchone()[0])


async def test_sigkill_during_import_leaves_all_or_none(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    args = ["--db", str(db), "--guest-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/x-ndjson"}

    # Calibrate: how long does one import take on this machine right now?
    with server_process(args, tmp_path / "calibrate.log", env=env) as server:
        async with aiohttp.ClientSession(headers=headers) as session:
            started = time.monotonic()
            async with session.post(server.admin_url + "/api/v1/vms/import", data=rows(0)) as r:
                assert r.status == 200, await r.text()
            duration = time.monotonic() - started
    expected = ROWS
    assert count(db) == expected

    outcomes = []
    wal = db.with_name(db.name + "-wal")
    # Kills spread over the import, and three at the moment the transaction starts
    # writing pages (the WAL file grows): the moment a torn import would show.
    moments: list[float | None] = [duration * k / 5 for k in range(1, 5)] + [None, None, None]
    for attempt, delay in enumerate(moments, start=1):
        with server_process(args, tmp_path / f"kill{attempt}.log", env=env) as server:
            async with aiohttp.ClientSession(headers=headers) as session:
                request = asyncio.ensure_future(
                    session.post(server.admin_url + "/api/v1/vms/import", data=rows(attempt))
                )
                if delay is not None:
                    await asyncio.sleep(delay)
                else:
                    size = wal.stat().st_size if wal.exists() else 0
                    deadline = time.monotonic() + duration * 3
                    while time.monotonic() < deadline:
                        if wal.exists() and wal.stat().st_size > size:
                            break
                        await asyncio.sleep(0.0005)
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
                try:
                    response = await request
                    response.release()
                except aiohttp.ClientError:
                    pass
        after = count(db)
        assert after in (expected, expected + ROWS), f"kill after {delay:.2f}s left {after} rows"
        outcomes.append("all" if after > expected else "none")
        expected = after

    # A restarted server serves exactly what was committed.
    with server_process(args, tmp_path / "restart.log", env=env) as server:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(server.admin_url + "/api/v1/vms") as r,
        ):
            assert (await r.json())["count"] == expected
    print(f"import took {duration:.2f}s; kills left: {outcomes}")
