"""How long the bridge guard takes to put its rules for 10,000 guests into the kernel, as
one `nft` transaction, next to a baseline measured in the same run: nft loading one plain
set of the same 10,000 MACs.

    sudo .venv/bin/python benchmarks/guard_rules.py [--guests 10000] [--rounds 5]

Runs in a network namespace of its own (with a bridge and 200 ports' names), removed at
the end. Prints the whole table at start, a burst that registers every guest at once,
and one change with every guest registered (what a debounced registry change costs: only
the elements that differ go into the batch). Goal: the change under 300 ms with 10,000
guests registered.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metadata_server.guard.rules import (
    GuardPlan,
    plan,
    table_commands,
    update_commands,
)
from tests.support.netns import bridge_network

GOAL_MS = 300.0


def nft(namespace: str, commands: list[dict[str, object]]) -> float:
    """Seconds one `nft -j -f -` of `commands` takes."""
    text = json.dumps({"nftables": commands})
    started = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-j", "-f", "-"],
        input=text.encode(),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    guests = [
        (
            f"02:00:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
            f"198.18.{n // 250 % 250}.{n % 250 + 2}",
        )
        for n in range(args.guests)
    ]
    ports = [f"vif{n}.0" for n in range(1, 201)]
    bindings = {port: guests[n][0] for n, port in enumerate(ports)}
    with bridge_network() as net:
        ns = net.dom0.name

        def guard_plan(members: list[tuple[str, str]]) -> GuardPlan:
            return plan(
                "br0",
                members,
                ports=ports,
                patterns=["vif*"],
                bindings=bindings,
                strict_patterns=["vif*"],
                dom0_addresses=["198.18.0.1"],
            )

        full = guard_plan(guests)
        empty = guard_plan([])
        whole = table_commands(full)
        burst = update_commands(empty, full)
        built = time.perf_counter()
        moved = guard_plan([*guests[:-1], (guests[-1][0], "198.18.250.2")])
        change = update_commands(full, moved)
        build_ms = (time.perf_counter() - built) * 1e3
        undo = update_commands(moved, full)
        baseline_set = [
            {"add": {"table": {"family": "bridge", "name": "baseline"}}},
            {
                "add": {
                    "set": {
                        "family": "bridge",
                        "table": "baseline",
                        "name": "macs",
                        "type": "ether_addr",
                    }
                }
            },
            {"flush": {"set": {"family": "bridge", "table": "baseline", "name": "macs"}}},
            {
                "add": {
                    "element": {
                        "family": "bridge",
                        "table": "baseline",
                        "name": "macs",
                        "elem": [mac for mac, _ in guests],
                    }
                }
            },
        ]
        starts, bursts, changes, baselines = [], [], [], []
        for _ in range(args.rounds):
            baselines.append(nft(ns, baseline_set))
            starts.append(nft(ns, whole))
            nft(ns, update_commands(full, empty))
            bursts.append(nft(ns, burst))
            changes.append(nft(ns, change))
            nft(ns, undo)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1e3

    print(f"{args.guests} guests, {len(ports)} bound ports, median of {args.rounds} rounds:")
    print(f"  the change's plan and batch, in Python:        {build_ms:8.1f} ms")
    print(f"  whole table with every guest (at start):       {ms(starts):8.1f} ms")
    print(f"  a burst registering all of them (one batch):   {ms(bursts):8.1f} ms")
    print(f"  one guest changed, the others registered:      {ms(changes):8.1f} ms")
    print(f"  baseline, nft loading one plain set of MACs:   {ms(baselines):8.1f} ms")
    met = ms(changes) + build_ms < GOAL_MS
    print(
        f"goal (a change with {args.guests} guests registered, Python and nft, under "
        f"{GOAL_MS:g} ms): "
        f"{'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
