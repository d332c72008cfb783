"""`metadata-server image ...`: master images and the guests' delta disks, on this host.

    image prepare SRC --out MASTER [--format qcow2|vhd] [--verify-key-from-server [--db PATH]]
    image clone MASTER --out DELTA [--format qcow2|vhd] [--verify]
    image show MASTER [--verify]

`prepare` (as root) prints a line per step on stderr and the master's record on stdout;
on Ctrl-C or SIGTERM it stops, undoes what it did, says so and exits 130 (143 for
SIGTERM). `clone` prints the delta's path. `show` prints a master's record (JSON), after
checking the master against it.

`METADATA_SERVER_IMAGE_PAUSE_AT=TEXT` makes prepare wait 10 s after the progress line
that starts with TEXT: for tests that interrupt it between two given steps, and for
looking at what a step holds (the working copy, the loop device, the mount).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metadata_server.config import Settings
from metadata_server.images.clone import clone_master
from metadata_server.images.disk import QEMU_FORMATS
from metadata_server.images.interrupts import Terminated, sigterm_interrupts
from metadata_server.images.prepare import PrepareRequest, check_request, prepare_master
from metadata_server.images.record import MasterRecord, read_master
from metadata_server.signing import ensure_key

FORMATS = tuple(QEMU_FORMATS)
PAUSE_VARIABLE = "METADATA_SERVER_IMAGE_PAUSE_AT"
PAUSE = 10.0


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = commands.add_parser("prepare", help="make a read-only master image from a disk image")
    add_common(p)
    p.add_argument("source", type=Path, metavar="SRC", help="raw or qcow2 disk with a Linux root")
    p.add_argument("--out", required=True, type=Path, metavar="MASTER", help="a new file")
    p.add_argument("--format", choices=FORMATS, default="qcow2", help="the master's (qcow2)")
    p.add_argument(
        "--verify-key-from-server",
        action="store_true",
        help="put the server's signing key into the guest config (verify_key=)",
    )
    p.add_argument("--db", help="the registry (its directory holds the key by default)")
    p.set_defaults(handler=prepare)

    p = commands.add_parser("clone", help="make a guest's delta disk on a prepared master")
    p.add_argument("master", type=Path, metavar="MASTER")
    p.add_argument("--out", required=True, type=Path, metavar="DELTA", help="a new file")
    p.add_argument("--format", choices=FORMATS, help="the delta's (default: the master's)")
    p.add_argument("--verify", action="store_true", help="re-hash the master first")
    p.set_defaults(handler=clone)

    p = commands.add_parser("show", help="print a prepared master's record (JSON)")
    p.add_argument("master", type=Path, metavar="MASTER")
    p.add_argument("--verify", action="store_true", help="re-hash the master first")
    p.set_defaults(handler=show)


def _say(line: str) -> None:
    print(f"image prepare: {line}", file=sys.stderr, flush=True)
    pause_at = os.environ.get(PAUSE_VARIABLE)
    if pause_at and line.startswith(pause_at):
        time.sleep(PAUSE)


def prepare(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    with sigterm_interrupts():
        try:
            tools = check_request(args.source, args.out, args.format)
            key = None
            if args.verify_key_from_server:
                settings = settings_from(args, {"db": args.db})
                key = ensure_key(settings.guest.signing_key).verify_key()
            request = PrepareRequest(args.source, args.out, args.format, key)
            record = prepare_master(request, tools, _say)
        except KeyboardInterrupt as interrupt:
            signal_name = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
            print(
                f"metadata-server: image prepare stopped by {signal_name}; "
                "what it had made is removed",
                file=sys.stderr,
            )
            return _interrupted_status(interrupt)
    _print_record(record)
    return 0


def clone(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    with sigterm_interrupts():
        try:
            clone_master(args.master, args.out, fmt=args.format, verify=args.verify)
        except KeyboardInterrupt as interrupt:
            print("metadata-server: image clone stopped; no delta was made", file=sys.stderr)
            return _interrupted_status(interrupt)
    print(args.out)
    return 0


def show(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    _print_record(read_master(args.master, verify=args.verify))
    return 0


def _interrupted_status(interrupt: KeyboardInterrupt) -> int:
    """The shell's status for a command ended by SIGTERM (143) or SIGINT (130)."""
    return 143 if isinstance(interrupt, Terminated) else 130


def _print_record(record: MasterRecord) -> None:
    print(json.dumps(record.to_json(), indent=2))
