"""Render time of the DHCP files for 10,000 guests, for each daemon (goal: under 300 ms
each), next to a baseline measured in the same run: the same reservations written as
lines by plain Python, without templates.

Usage: .venv/bin/python benchmarks/dhcp_render.py [--guests 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metadata_server.dhcp.render import DAEMONS, DhcpPlan, render
from metadata_server.dhcp.subnets import Subnet
from metadata_server.dhcp.templates import template_environment
from metadata_server.model import VM, State, parse_vm


def guests(count: int) -> list[VM]:
    out = []
    for n in range(count):
        body = {
            "hostname": f"guest{n}",
            "ipv4": {"address": f"198.18.{n // 250 + 1}.{n % 250 + 2}", "prefix": 16},
            "password_hash": "!",
        }
        spec = parse_vm(body, mac=f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}").spec
        out.append(VM(spec, "id", State.REGISTERED, {}, None, 0.0, 0.0))
    return out


def timed(fn: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    vms = guests(args.guests)
    subnet = Subnet(
        ipaddress.IPv4Network("198.18.0.0/16"), ipaddress.IPv4Address("198.18.0.1"), "br0",
        ("198.18.0.1",), "guests.internal", 3600,
    )  # fmt: skip
    plan = DhcpPlan((subnet,))
    env = template_environment()

    def baseline() -> str:
        return "".join(f"{v.mac},{v.spec.ipv4.address},{v.spec.hostname}\n" for v in vms)

    base = timed(baseline, args.runs)
    print(f"{args.guests} guests; median of {args.runs} runs")
    print(f"{'baseline (plain Python lines)':<32}{base * 1000:8.1f} ms")
    for daemon in DAEMONS:
        took = timed(lambda daemon=daemon: render(daemon, vms, plan, env).files, args.runs)  # type: ignore[misc]
        verdict = "ok" if took < 0.3 else "OVER the 300 ms goal"
        name = f"{daemon} (validate + render)"
        print(f"{name:<32}{took * 1000:8.1f} ms  x{took / base:5.1f}  {verdict}")


if __name__ == "__main__":
    main()
