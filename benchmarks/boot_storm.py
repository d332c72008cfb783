"""A boot storm by both methods: N guests (default 200) by the network pull, with the ISO
method measured in the same run as the baseline, through the comparison harness
(`metadata-server compare`, metadata_server_testbed/compare/).

Goal: every one of the 200 network guests configured within 10 s of its boot start,
with nothing left behind.

    sudo .venv/bin/python benchmarks/boot_storm.py [--guests 200] [--concurrency 20] [--out DIR]

Needs root and what `metadata-server compare --help` lists. Prints, per method, p50, p95,
max, guests per second and Dom0 CPU, and whether the goal was met.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metadata_server_testbed.compare.harness import (
    Options,
    missing_requirements,
    run_comparison,
)
from metadata_server_testbed.compare.stats import summarize_run

GOAL_SECONDS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", type=Path, help="keep the report here (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="boot-storm-"))
    options = Options(sweep=(args.guests,), concurrency=args.concurrency, out=out)
    problems = missing_requirements(options)
    if problems:
        print("cannot run: " + "; ".join(problems), file=sys.stderr)
        return 2
    comparison, status = run_comparison(options)
    header = ("method", "N", "p50 s", "p95 s", "max s", "guests/s", "Dom0 CPU s")
    print("{:8} {:>5} {:>7} {:>7} {:>7} {:>9} {:>11}".format(*header))
    met = False
    for run in comparison.runs:
        s = summarize_run(run)
        t = s.times
        if t is None:
            print(f"{s.method:8} {s.guests:>5} no guest configured")
            continue
        print(
            f"{s.method:8} {s.guests:>5} {t.p50:7.3f} {t.p95:7.3f} {t.max:7.3f} "
            f"{s.per_second:9.1f} {s.dom0_cpu_s:11.2f}"
        )
        if s.method == "network":
            met = s.within_10s == s.guests and not run.leftovers
    left = len(comparison.leftovers)
    verdict = "met" if met else "NOT met"
    print(f"goal (all network guests within {GOAL_SECONDS:g} s, nothing left): {verdict}")
    print(f"left behind: {left}; report: {out / 'report.md'}")
    return status if met else 1


if __name__ == "__main__":
    sys.exit(main())
