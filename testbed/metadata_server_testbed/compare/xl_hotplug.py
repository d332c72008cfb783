"""The `xl` the harness gives Dom0 on a host without Xen: the xl stand-in
(`metadata_server_testbed.xen.xl_standin`), plus what Xen's block backend and the guest's
udev would do after it, plus a cost log.

    python -m metadata_server_testbed.compare.xl_hotplug --state-dir DIR --hotplug-dir HOT \
        --cost-log FILE -- <xl args>

1. Runs the xl stand-in in this process (`xl_standin.main`) with `--state-dir DIR`; it
   loop-attaches the ISO read-only and records the loop device.
2. Hotplug stand-in: after a successful `block-attach D SPEC`, writes "MAJOR MINOR" of
   that loop device to `HOT/D/<vdev>` (a directory shared with guest D only, seen there
   as /run/xen); after a successful `block-detach D VDEV`, removes it. The guest's init
   makes its /dev/<vdev> from it, as udev would for a hot-plugged xen-blkfront disk.
3. Appends one JSON line to FILE: the xl argv, the exit status, the CPU seconds this
   process and its children used (getrusage), and the size of the ISO attached.

Exits with the stand-in's status. It never touches a real Xen; like the stand-in, it
is for test and comparison hosts only.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

from metadata_server_testbed.xen import xl_standin


def _option(options: list[str], name: str) -> str:
    if name not in options or options.index(name) + 1 >= len(options):
        raise ValueError(f"{name} is required")
    return options[options.index(name) + 1]


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="ascii")
    os.replace(temporary, path)


def publish(state: Path, hotplug: Path, xl_args: Sequence[str]) -> int:
    """After a successful xl command: the device numbers for the guest (attach), or
    their removal (detach). Returns the ISO's size for an attach, else 0."""
    if len(xl_args) < 3 or not xl_args[1].isdigit():
        return 0
    command, domid = xl_args[0], xl_args[1]
    if command == "block-attach":
        spec = xl_standin.parse_disk_spec(",".join(xl_args[2:]))
        vdev, target = spec.get("vdev", ""), spec.get("target", "")
        device = (state / xl_standin.DEVICES / domid / vdev).read_text().strip()
        if device.startswith("/dev/"):
            rdev = os.stat(device).st_rdev
            _write_atomically(hotplug / domid / vdev, f"{os.major(rdev)} {os.minor(rdev)}\n")
        return os.stat(target).st_size if target else 0
    if command == "block-detach":
        with contextlib.suppress(FileNotFoundError):
            (hotplug / domid / xl_args[2]).unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        usage = "usage: xl_hotplug --state-dir D --hotplug-dir H --cost-log F -- ARGS"
        print(usage, file=sys.stderr)
        return 2
    split = args.index("--")
    options, xl_args = args[:split], args[split + 1 :]
    try:
        state = Path(_option(options, "--state-dir"))
        hotplug = Path(_option(options, "--hotplug-dir"))
        cost_log = Path(_option(options, "--cost-log"))
    except ValueError as error:
        print(f"xl_hotplug: {error}", file=sys.stderr)
        return 2
    status = xl_standin.main(["--state-dir", str(state), "--", *xl_args])
    iso_bytes = 0
    if status == 0:
        try:
            iso_bytes = publish(state, hotplug, xl_args)
        except OSError as error:
            # xl's own result stands (the disk is attached, Dom0 detaches it as usual);
            # the guest never sees the disk and Dom0's wait for it times out.
            print(f"xl_hotplug: hotplug stand-in failed: {error}", file=sys.stderr)
    entry = {"argv": xl_args, "status": status, "cpu_s": _cpu_seconds(), "iso_bytes": iso_bytes}
    with open(cost_log, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
