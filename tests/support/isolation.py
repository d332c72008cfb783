"""Two guests on one Dom0 bridge, one quiet and one hostile, and the real server as a
process under a file-descriptor limit (systemd's default 1024): what the isolation test
and benchmarks/guest_isolation.py both run.

The quiet guest asks with curl and its latency is curl's own `time_total`; the hostile
guest runs tests/support/flood.py in its namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.dom0 import admin_call
from tests.support.netns import BridgeNetwork, Guest, bridge_network
from tests.support.records import guest_body
from tests.support.server_process import ServerProcess, server_process
from tests.support.service import ADMIN_TOKEN

QUIET_MAC = "02:00:c6:12:01:0b"
HOSTILE_MAC = "02:00:c6:12:01:0c"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Bench:
    net: BridgeNetwork
    quiet: Guest
    hostile: Guest
    server: ServerProcess

    def rss_mib(self) -> float:
        """The server's resident memory now."""
        status = Path(f"/proc/{self.server.process.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        return int(kib) / 1024

    def ask(self, path: str = "/v1/config.txt") -> tuple[int, float]:
        """One request from the quiet guest: (status, seconds)."""
        out = self.quiet.ns.run(
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{http_code} %{time_total}",
            f"http://169.254.169.254{path}",
            check=False,
        )
        code, _, seconds = out.partition(" ")
        return int(code or 0), float(seconds or 5)

    def ask_while(
        self, process: subprocess.Popen[bytes], at_least: int = 20
    ) -> list[tuple[int, float]]:
        """The quiet guest's requests, ten a second (under its rate limit), while `process`
        (a flood) runs; at least `at_least`."""
        answers = []
        while process.poll() is None or len(answers) < at_least:
            answers.append(self.ask())
            time.sleep(0.1)
        return answers

    def flood(self, mode: str, count: int, hold: float = 5.0) -> subprocess.Popen[bytes]:
        return self.hostile.ns.popen(
            sys.executable,
            "-m",
            "tests.support.flood",
            mode,
            str(count),
            "--hold",
            str(hold),
            cwd=str(REPO),
            stdout=subprocess.PIPE,
        )


def outcome(process: subprocess.Popen[bytes]) -> dict[str, int]:
    out, _ = process.communicate(timeout=120)
    result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def slowest(answers: list[tuple[int, float]]) -> float:
    return max(seconds for _, seconds in answers)


def median(answers: list[tuple[int, float]]) -> float:
    return statistics.median(seconds for _, seconds in answers)


@contextlib.contextmanager
def isolation_bench(tmp_path: Path, *, nofile: int = 1024, extra: str = "") -> Iterator[Bench]:
    with bridge_network() as net:
        net.add_metadata_address()
        config = tmp_path / "isolation.toml"
        config.write_text(
            f'db = "{tmp_path}/registry.db"\n'
            "[guest]\n"
            'listen = ["169.254.169.254:80"]\n'
            'verify_neighbour = "always"\n'
            f"{extra}\n"
            "[admin]\n"
            f'listen = "unix:{tmp_path}/admin.sock"\n'
        )
        prefix = [
            "ip",
            "netns",
            "exec",
            net.dom0.name,
            "prlimit",
            f"--nofile={nofile}:{nofile}",
            "--",
        ]
        env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
        with server_process(
            ["--config", str(config)], tmp_path / "server.log", env=env, prefix=prefix
        ) as server:
            for mac, n in ((QUIET_MAC, 1), (HOSTILE_MAC, 2)):
                status, body = asyncio.run(
                    admin_call(server, "PUT", f"/api/v1/vms/{mac}", guest_body(n))
                )
                assert status in (200, 201), body
            quiet = net.add_guest(QUIET_MAC, "198.18.0.11")
            hostile = net.add_guest(HOSTILE_MAC, "198.18.0.12")
            yield Bench(net, quiet, hostile, server)
