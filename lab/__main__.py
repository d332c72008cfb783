"""`python -m lab [SCENARIO] [--deadline S] [--cache DIR]`: build the lab (cached), boot it
for one scenario (default: network, the demo), print its checks and figures; exit 0
only when every check passed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab import markers
from lab.builder.build import build
from lab.builder.cache import cache_dir
from lab.builder.commands import BuildError
from lab.qemu import LabFailed, boot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab/run", description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=["network"], help="in order, one boot")
    parser.add_argument(
        "--deadline", type=float, default=900.0, help="seconds before the VM is killed"
    )
    parser.add_argument("--cache", type=Path, help="cache directory")
    args = parser.parse_args(argv)
    try:
        root = cache_dir(args.cache)
        report = build(cache_root=root)
        result = boot(report.lab, args.scenarios, log_dir=root / "logs", deadline=args.deadline)
    except (BuildError, ValueError, LabFailed) as error:
        print(f"lab/run: {error}", file=sys.stderr)
        return 1
    for check_id, check in sorted(result.report.checks.items()):
        print(f"  {check.status:4} {check_id}  {check.detail}")
    if result.first_marker_seconds is not None:
        print(
            "  figure dom0 boot (QEMU start to the scenario's first line): "
            f"{result.first_marker_seconds:.1f} s"
        )
    for name, value in sorted(result.report.figures.items()):
        print(f"  figure {name}: {value:.1f} s")
    print(f"  the whole boot: {result.seconds:.1f} s; serial log {result.serial_log}")
    ok = all(result.report.ended.get(name, False) for name in args.scenarios)
    ok = ok and not result.report.failed
    print(f"scenarios {', '.join(args.scenarios)}: {markers.OK if ok else markers.FAIL}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
