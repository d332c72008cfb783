"""What one hostile guest costs the others: a quiet guest's latency while another guest
floods the real server, next to the quiet guest's latency with no flood (same run), and
the server's memory. The server runs under systemd's default open-file limit (1024).

    sudo .venv/bin/python benchmarks/guest_isolation.py [--rounds 40]

Floods (tests/support/flood.py, from the hostile guest's namespace): 1,500 idle
connections, 1,500 slowloris connections, 1,000 requests with 800 KB of headers each.
Goal: every quiet request succeeds, the slowest under 1 s; the server under 400 MiB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.isolation import Bench, isolation_bench, median, outcome, slowest

FLOODS = [("idle", 1500), ("slowloris", 1500), ("bigheads", 1000)]
GOAL_SLOWEST = 1.0
GOAL_MIB = 400.0


def quiet_alone(bench: Bench, rounds: int) -> list[tuple[int, float]]:
    return [bench.ask() for _ in range(rounds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="quiet requests per baseline")
    args = parser.parse_args()
    met = True
    with tempfile.TemporaryDirectory(prefix="isolation-") as tmp, isolation_bench(Path(tmp)) as b:
        b.ask()  # warm: the first request marks the guest fetched
        print(f"server at start: {b.rss_mib():.0f} MiB")
        print(
            f"{'flood':<12} {'quiet p50 ms':>13} {'base p50 ms':>12} {'quiet max ms':>13} "
            f"{'base max ms':>12} {'ok':>7} {'RSS MiB':>8}  hostile guest saw"
        )
        for mode, count in FLOODS:
            base = quiet_alone(b, args.rounds)
            flood = b.flood(mode, count, hold=6.0)
            during = b.ask_while(flood, at_least=args.rounds)
            seen = outcome(flood)
            rss = b.rss_mib()
            ok = sum(1 for status, _ in during if status == 200)
            print(
                f"{mode:<12} {median(during) * 1e3:>13.1f} {median(base) * 1e3:>12.1f} "
                f"{slowest(during) * 1e3:>13.1f} {slowest(base) * 1e3:>12.1f} "
                f"{ok:>3}/{len(during):<3} {rss:>8.0f}  {seen}"
            )
            met &= ok == len(during) and slowest(during) < GOAL_SLOWEST and rss < GOAL_MIB
        print(f"server at the end: {b.rss_mib():.0f} MiB")
    print(
        f"goal (every quiet request answered, slowest < {GOAL_SLOWEST:g} s, "
        f"server < {GOAL_MIB:g} MiB): {'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
