"""`metadata-server compare`: boot simulated guests by the network pull and by the ISO
method, side by side, and write a report with charts and the raw data.

    metadata-server compare --guests N [--concurrency C] [--methods network,iso]
                            [--sweep 1,10,50,200] [--faults] --out DIR

Part of the test bench, not of the product: installed with `pip install ./testbed`, it
is `metadata-server-compare`, and `metadata-server compare` (an entry point in the
`metadata_server.commands` group that the product's CLI looks up). Needs root and the
tools listed by `--help`'s epilog; see metadata_server_testbed/compare/ for what runs
where. Importing this module is cheap: the harness (and matplotlib) load only when the
command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metadata_server.digits import ascii_decimal, ascii_int

DESCRIPTION = (
    "Boot simulated guests by the network pull and by the ISO method, side by side, and "
    "write DIR/report.md with charts (PNG) and the raw data (JSON, CSV)."
)
EPILOG = (
    "Needs root, iproute2, util-linux (unshare, nsenter, losetup), dnsmasq, "
    "busybox-static, xenstore-utils, and fuseiso where the kernel has no iso9660. "
    "Everything it creates is removed at the end, also after Ctrl-C."
)


def _positive_int(text: str) -> int:
    value = ascii_int(text.strip())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _sweep(text: str) -> tuple[int, ...]:
    values = tuple(_positive_int(part.strip()) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError("name at least one number of guests")
    return values


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [m for m in methods if m not in ("network", "iso")]
    if unknown or not methods:
        raise argparse.ArgumentTypeError("methods are network and iso, comma-separated")
    return tuple(dict.fromkeys(methods))


def _seconds(text: str) -> float:
    value = ascii_decimal(text.strip())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--guests", type=_positive_int, default=10, metavar="N", help="default 10")
    p.add_argument(
        "--sweep",
        type=_sweep,
        metavar="N,N,...",
        help="one run per N (overrides --guests)",
    )
    p.add_argument(
        "--concurrency", type=_positive_int, default=20, metavar="C", help="guests booting at once"
    )
    p.add_argument(
        "--methods",
        type=_methods,
        default=("network", "iso"),
        metavar="LIST",
        help="network, iso or both, comma-separated (default both)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory")
    p.add_argument("--faults", action="store_true", help="also run the fault scenarios")
    p.add_argument(
        "--fault-guests", type=_positive_int, default=2, metavar="N", help="guests per fault"
    )
    p.add_argument(
        "--hypervisor",
        choices=("standin", "xen"),
        default="standin",
        help="standin: simulated guests, the xenstored and xl stand-ins (default); xen: "
        "real PV domUs from --xen-image, on the host's own xl and xenstored (in a Xen Dom0)",
    )
    p.add_argument(
        "--xen-image", type=Path, metavar="QCOW2", help="with --hypervisor xen: the master disk"
    )
    p.add_argument("--xen-kernel", type=Path, metavar="FILE", help="the guests' PV kernel")
    p.add_argument("--xen-ramdisk", type=Path, metavar="FILE", help="their initramfs")
    p.add_argument("--xen-memory", type=_positive_int, default=256, metavar="MIB", help="per guest")
    p.add_argument(
        "--xen-iso-extra",
        default="",
        metavar="ARGS",
        help="kernel command line words for the ISO method's guests, whose network never "
        "comes up (e.g. systemd.mask=systemd-networkd-wait-online.service)",
    )
    p.add_argument(
        "--guest-cpu",
        choices=("grouped", "peers"),
        default="grouped",
        help="grouped: the guests share one CPU group against Dom0, as guests' vCPUs do "
        "on Xen (default); peers: each guest weighs as much as all of Dom0",
    )
    p.add_argument(
        "--guest-timeout", type=_seconds, default=60.0, metavar="S", help="per guest boot"
    )
    p.add_argument("--flow-timeout", type=_seconds, default=60.0, metavar="S", help="per ISO flow")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning")


def options_from(args: argparse.Namespace) -> Any:
    from metadata_server_testbed.compare.harness import Options

    return Options(
        methods=args.methods,
        sweep=args.sweep or (args.guests,),
        concurrency=args.concurrency,
        out=args.out,
        faults=args.faults,
        fault_guests=args.fault_guests,
        hypervisor=args.hypervisor,
        guest_cpu=args.guest_cpu,
        guest_timeout=args.guest_timeout,
        flow_timeout=args.flow_timeout,
        xen_image=xen_image_from(args),
    )


def xen_image_from(args: argparse.Namespace) -> Any:
    if args.xen_image is None and args.xen_kernel is None:
        return None
    from metadata_server_testbed.compare.xen_guests import XenImage

    return XenImage(
        master=args.xen_image or Path("(no --xen-image)"),
        kernel=args.xen_kernel or Path("(no --xen-kernel)"),
        ramdisk=args.xen_ramdisk,
        memory_mib=args.xen_memory,
        iso_extra=args.xen_iso_extra,
    )


def run(args: argparse.Namespace, settings_from: Callable[..., Any] | None = None) -> int:
    """The command's handler (`settings_from` is the CLI's; the harness needs none)."""
    # metadata-server runs every command under umask 077; the bench's directories must
    # stay readable to the dnsmasq its Dom0 runs as another user (they hold test data).
    os.umask(0o022)
    from metadata_server_testbed.compare.harness import missing_requirements, run_comparison
    from metadata_server_testbed.compare.report import verdict_lines
    from metadata_server_testbed.compare.stats import summarize_run, verdicts

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    options = options_from(args)
    problems = missing_requirements(options)
    if problems:
        for problem in problems:
            print(f"metadata-server compare: {problem}", file=sys.stderr)
        return 1
    comparison, status = run_comparison(options)
    summaries = [summarize_run(record) for record in comparison.runs]
    for line in verdict_lines(verdicts(summaries), summaries):
        print(line)
    left = len(comparison.leftovers)
    print(f"report: {options.out / 'report.md'} ({left} things left behind)")
    return status


def register(commands: Any) -> None:
    """The `metadata_server.commands` entry point: adds `compare` to `metadata-server`."""
    p = commands.add_parser(
        "compare", help="boot simulated guests by both methods and compare them (test bench)"
    )
    add_arguments(p)
    p.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metadata-server compare", description=DESCRIPTION)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
