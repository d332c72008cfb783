"""What a big bulk import does to a guest being served meanwhile.

A guest (curl in a shell loop of its own, `GET /v1/config` every 0.1 s from 127.0.0.1)
asks a real MetadataService while the admin API imports `--rows` guests (NDJSON, one
request), and a ticker on the server's event loop records its largest stall. The baseline
is the same guest for as long, in the same run, with no import. Goal: every answer during
a 50,000-row import within 2 s (the guest script gives up after 5 s).

    .venv/bin/python benchmarks/import_stall.py [--rows 50000] [--rounds 1]

Needs curl.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metadata_server.app import MetadataService
from tests.support.import_load import GuestTimes, import_body, watch_guest
from tests.support.service import ADMIN_TOKEN, make_settings
from tests.test_guest_api import loopback_guest

GOAL = 2.0


def line(name: str, times: GuestTimes) -> str:
    ms = sorted(seconds * 1000 for seconds in times.latencies)
    failed = len(times.failures())
    return (
        f"{name:<16} {len(ms):>5} answers  median {statistics.median(ms):7.1f} ms  "
        f"worst {ms[-1]:7.1f} ms  failed {failed:>3}  loop stall {times.worst_stall * 1000:7.1f} ms"
    )


async def run(rows: int, rounds: int, workdir: Path) -> bool:
    service = MetadataService(make_settings(workdir, **{"guest.rate_limit": 0}))
    await service.start()
    ok = True
    try:
        assert service.registry is not None
        assert service.admin_address is not None
        await service.registry.put("02:00:c6:12:00:01", loopback_guest(1, "127.0.0.1"))
        guest_url = service.guest_addresses[0].url + "/v1/config"
        import_url = service.admin_address.url + "/api/v1/vms/import"
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=600),
        ) as session:

            async def work(body: bytes) -> None:
                async with session.post(
                    import_url, data=body, headers={"Content-Type": "application/x-ndjson"}
                ) as response:
                    if response.status != 200:
                        raise RuntimeError(f"the import failed: {await response.text()}")

            for number in range(1, rounds + 1):
                body = import_body(rows, first=number * rows)
                _, during = await watch_guest(guest_url, work(body), timeout=5.0)
                _, baseline = await watch_guest(
                    guest_url, asyncio.sleep(during.duration), timeout=5.0
                )
                print(f"round {number}: {rows} rows imported in {during.duration:.1f} s")
                print("  " + line("no import", baseline))
                print("  " + line("during import", during))
                ok = ok and not during.failures() and during.worst < GOAL
    finally:
        await service.stop()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("this benchmark needs curl")
    with tempfile.TemporaryDirectory(prefix="import-stall-") as workdir:
        ok = asyncio.run(run(args.rows, args.rounds, Path(workdir)))
    print(f"goal: every answer during the import within {GOAL:g} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
