"""GET /v1/config requests per second with 1,000 registered guests, against a bare
aiohttp handler that returns the same bytes, with the same load generator (wrk) in the
same run. Prints both and their ratio, for information: what users feel is measured by
benchmarks/guest_isolation.py and the boot storm (benchmarks/boot_storm.py).

Usage: .venv/bin/python benchmarks/guest_config_rps.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import UNREACHABLE_LIMIT, child, free_port, median, wrk

TOKEN = "benchmark-admin-token-0123456789"
GUESTS = 1000


def guests() -> list[dict[str, object]]:
    caller = {
        "mac": "02:00:7f:00:00:01",
        "hostname": "caller",
        "ipv4": {"address": "127.0.0.1", "prefix": 8},
        "password_hash": "!",
        "metadata": {"role": "benchmark"},
    }
    rows: list[dict[str, object]] = [caller]
    for n in range(1, GUESTS):
        rows.append(
            {
                "mac": f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}",
                "hostname": f"guest{n}",
                "ipv4": {"address": f"198.18.{n // 250}.{n % 250 + 2}", "prefix": 16},
                "password_hash": "!",
            }
        )
    return rows


def admin_call(port: int, method: str, path: str, body: object) -> object:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        guest_port, admin_port, bare_port = free_port(), free_port(), free_port()
        # All load comes from one address, which the per-guest rate limit would (rightly)
        # stop; a limit too high to reach keeps the limiter's cost in the measurement.
        env = {**os.environ, "METADATA_SERVER_ADMIN_TOKEN": TOKEN, **UNREACHABLE_LIMIT}
        serve = [sys.executable, "-m", "metadata_server", "serve", "--db", f"{tmp}/registry.db",
                 "--guest-listen", f"127.0.0.1:{guest_port}",
                 "--admin-listen", f"127.0.0.1:{admin_port}", "--log-level", "warning"]  # fmt: skip
        with child(serve, admin_port, env):
            admin_call(admin_port, "POST", "/api/v1/vms/import", guests())
            url = f"http://127.0.0.1:{guest_port}/v1/config"
            with urllib.request.urlopen(url, timeout=10) as response:
                document = response.read()
            Path(tmp, "doc.json").write_bytes(document)
            bare = [sys.executable, str(Path(__file__).with_name("bare_server.py")), str(bare_port),
                    f"{tmp}/doc.json"]  # fmt: skip
            with child(bare, bare_port):
                bare_url = f"http://127.0.0.1:{bare_port}/v1/config"
                wrk(url, seconds=1, connections=args.connections)  # warm both up
                wrk(bare_url, seconds=1, connections=args.connections)
                ours, baseline = [], []
                for _ in range(args.rounds):
                    ours.append(wrk(url, seconds=args.seconds, connections=args.connections))
                    baseline.append(
                        wrk(bare_url, seconds=args.seconds, connections=args.connections)
                    )
    print(f"guests registered:            {GUESTS}")
    print(f"document size:                {len(document)} bytes")
    results = (("metadata-server /v1/config:", ours), ("bare aiohttp, same bytes:", baseline))
    for name, values in results:
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<30}{median(values):10.0f} req/s  (rounds: {rounds})")
    # Rounds alternate, so each pair saw the same machine: the median of the per-pair
    # ratios is steadier on a shared machine than the ratio of the medians.
    ratios = [a / b for a, b in zip(ours, baseline, strict=True)]
    print(
        f"ratio, median of pairs: {median(ratios):.2f}"
        f"  (pairs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
