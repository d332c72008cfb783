"""Boot storms through the comparison harness (`metadata-server compare`,
metadata_server_testbed/compare/), with the ISO method as the baseline in the same run.

    sudo .venv/bin/python benchmarks/boot_storm.py [--fleet] [--guest-cpu grouped|peers]

Runs, one after the other:
- storm: 200 guests at once (`--guests 200 --concurrency 200`), network and ISO;
- cost: 50 guests at once, network (Dom0's CPU per guest);
- fleet (with --fleet, about two minutes more): 1,000 guests, 50 at a time, network.

Goals, on this 2-core machine where the simulated guests share the cores with Dom0:
storm: every network guest configured, p99 under 20 s, the server's own p99 (from its
latency histogram) under 250 ms; cost: Dom0 CPU per configured guest at most 15 ms;
fleet: every guest configured, p99 under 10 s; nothing left behind anywhere. Prints each
run's figures (the simulated guests' own CPU too) and whether each goal was met.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metadata_server_testbed.compare.harness import Options, missing_requirements, run_comparison
from metadata_server_testbed.compare.stats import RunSummary, summarize_run

STORM = (200, 200, ("network", "iso"))
COST = (50, 50, ("network",))
FLEET = (1000, 50, ("network",))
STORM_P99_S, STORM_SERVER_P99_S = 20.0, 0.25
COST_PER_GUEST_S = 0.015
FLEET_P99_S = 10.0
HEADER = ("run", "method", "N", "C", "ok", "failed", "p50 s", "p99 s", "server p99", "Dom0 ms/g")
ROW = "{:6} {:8} {:>5} {:>4} {:>5} {:>6} {:>7} {:>7} {:>10} {:>9}  guests' own {:.0f} ms/g"


def measure(
    name: str, size: tuple[int, int, tuple[str, ...]], guest_cpu: str, out: Path
) -> tuple[list[RunSummary], int]:
    guests, concurrency, methods = size
    options = Options(
        methods=methods,
        sweep=(guests,),
        concurrency=concurrency,
        out=out / name,
        guest_cpu=guest_cpu,
        guest_timeout=120.0,
    )
    problems = missing_requirements(options)
    if problems:
        raise SystemExit("cannot run: " + "; ".join(problems))
    comparison, status = run_comparison(options)
    summaries = [summarize_run(run) for run in comparison.runs]
    for s in summaries:
        t = s.times
        server = "-" if s.server_p99_s is None else f"≤ {s.server_p99_s * 1000:.0f} ms"
        print(
            ROW.format(
                name, s.method, s.guests, s.concurrency, s.configured, s.failed,
                f"{t.p50:.2f}" if t else "-", f"{t.p99:.2f}" if t else "-", server,
                f"{s.dom0_cpu_per_guest_s * 1000:.1f}", s.guests_cpu_per_guest_s * 1000,
            )
        )  # fmt: skip
    left = len(comparison.leftovers) + sum(s.leftovers for s in summaries)
    return summaries, left + (status != 0)


def verdict(goal: str, met: bool) -> bool:
    print(f"goal {goal}: {'met' if met else 'NOT met'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleet", action="store_true", help="also 1,000 guests, 50 at a time")
    parser.add_argument("--guest-cpu", choices=("grouped", "peers"), default="grouped")
    parser.add_argument("--out", type=Path, help="keep the reports here (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="boot-storm-"))
    print("{:6} {:8} {:>5} {:>4} {:>5} {:>6} {:>7} {:>7} {:>10} {:>9}".format(*HEADER))
    storm, storm_left = measure("storm", STORM, args.guest_cpu, out)
    cost, cost_left = measure("cost", COST, args.guest_cpu, out)
    fleet, fleet_left = measure("fleet", FLEET, args.guest_cpu, out) if args.fleet else ([], 0)
    net = next(s for s in storm if s.method == "network")
    met = verdict(
        f"storm (all configured, p99 < {STORM_P99_S:g} s, server p99 < 250 ms)",
        net.failed == 0
        and net.times is not None
        and net.times.p99 < STORM_P99_S
        and net.server_p99_s is not None
        and net.server_p99_s <= STORM_SERVER_P99_S,
    )
    met &= verdict(
        f"cost (Dom0 ≤ {COST_PER_GUEST_S * 1000:g} ms per guest at N=50)",
        cost[0].failed == 0 and cost[0].dom0_cpu_per_guest_s <= COST_PER_GUEST_S,
    )
    if args.fleet:
        met &= verdict(
            f"fleet (all 1,000 configured, p99 < {FLEET_P99_S:g} s)",
            fleet[0].failed == 0
            and fleet[0].times is not None
            and fleet[0].times.p99 < FLEET_P99_S,
        )
    met &= verdict("nothing left behind", storm_left + cost_left + fleet_left == 0)
    print(f"reports: {out}/*/report.md")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
