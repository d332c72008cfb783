"""A stand-in for `xl` on hosts without Xen (tests, comparison harness).

    python -m metadata_server_testbed.xen.xl_standin --state-dir DIR [--no-loop] -- <xl args>

Only what the ISO fallback uses: `block-attach <domid> <disk spec>` and
`block-detach <domid> <vdev>`. Every call first appends its xl argv (what follows `--`)
as one JSON array per line to `DIR/xl-argv.log`. An attach is made real: the `target`
file is loop-attached (`losetup -r -f --show`, read-only when `access=ro`) and the loop
device path is written to `DIR/devices/<domid>/<vdev>`, where a test's guest finds
its "CD-ROM"; a detach releases the loop device and removes that file. With
`--no-loop` the file says `none` and no loop device is used.

The domain must exist in xenstore (`xenstore-exists /local/domain/<domid>`, through
the XENSTORED_PATH in the environment, as xl's libxenstore would use it); failures are
reported on stderr in xl's words, with exit status 1. It never touches a real Xen.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from metadata_server.digits import ascii_int

TIMEOUT = 20.0
LOG_NAME = "xl-argv.log"
DEVICES = "devices"


class XlFailure(Exception):
    """Exit 1 with this text on stderr."""


def parse_disk_spec(spec: str) -> dict[str, str]:
    """`key=value, key=value, ..., target=<rest>` → dict (xl: target eats the rest)."""
    settings: dict[str, str] = {}
    rest = spec
    while rest:
        rest = rest.lstrip(" ")
        if rest.startswith("target="):
            settings["target"] = rest[len("target=") :]
            break
        item, _, rest = rest.partition(",")
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise XlFailure(f"Invalid disk specification: {item.strip()!r}")
        settings[key] = value
    return settings


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT)


def _domid(text: str) -> int:
    domid = ascii_int(text)
    if domid is None:
        raise XlFailure(f"{text} is an invalid domain identifier")
    return domid


def _require_domain(domid: int) -> None:
    result = _run(["xenstore-exists", f"/local/domain/{domid}"])
    if result.returncode == 1 and not result.stderr.strip():
        raise XlFailure(f"libxl: error: libxl_domain.c: Domain {domid}:Non-existant domain")
    if result.returncode != 0:
        raise XlFailure(f"libxl: error: cannot reach xenstore: {result.stderr.strip()}")


def block_attach(state: Path, args: list[str], use_loop: bool) -> None:
    if len(args) < 2:
        raise XlFailure("'xl block-attach' requires at least 2 arguments.")
    domid = _domid(args[0])
    disk = parse_disk_spec(",".join(args[1:]))
    vdev, target = disk.get("vdev"), disk.get("target")
    if not vdev or not target:
        raise XlFailure("Invalid disk specification: vdev and target are required")
    try:
        _require_domain(domid)
    except XlFailure as error:
        raise XlFailure(f"{error}\nlibxl_device_disk_add failed.") from None
    record = state / DEVICES / str(domid) / vdev
    if record.exists():
        raise XlFailure(
            f"libxl: error: device {vdev} of domain {domid} already exists\n"
            "libxl_device_disk_add failed."
        )
    device = "none"
    if use_loop:
        read_only = ["-r"] if disk.get("access", "rw") in ("ro", "r") else []
        result = _run(["losetup", *read_only, "-f", "--show", target])
        if result.returncode != 0:
            raise XlFailure(
                f"libxl: error: cannot open {target}: {result.stderr.strip()}\n"
                "libxl_device_disk_add failed."
            )
        device = result.stdout.strip()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(device + "\n")


def block_detach(state: Path, args: list[str], use_loop: bool) -> None:
    if len(args) != 2:
        raise XlFailure("'xl block-detach' requires 2 arguments.")
    domid = _domid(args[0])
    vdev = args[1]
    record = state / DEVICES / str(domid) / vdev
    if not record.exists():
        raise XlFailure(f"Error: Device {vdev} not connected.")
    device = record.read_text().strip()
    if use_loop and device != "none":
        result = _run(["losetup", "-d", device])
        if result.returncode != 0:
            raise XlFailure(
                f"libxl: error: cannot release {device}: {result.stderr.strip()}\n"
                "libxl_device_disk_safe_remove failed."
            )
    record.unlink()


COMMANDS = {"block-attach": block_attach, "block-detach": block_detach}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        print("usage: xl_standin --state-dir DIR [--no-loop] -- <xl args>", file=sys.stderr)
        return 2
    split = args.index("--")
    options, xl_args = args[:split], args[split + 1 :]
    use_loop = "--no-loop" not in options
    if "--state-dir" not in options or options.index("--state-dir") + 1 >= len(options):
        print("xl_standin: --state-dir DIR is required", file=sys.stderr)
        return 2
    state = Path(options[options.index("--state-dir") + 1])
    state.mkdir(parents=True, exist_ok=True)
    with open(state / LOG_NAME, "a", encoding="utf-8") as log_file:
        log_file.write(json.dumps(xl_args) + "\n")
    if not xl_args or xl_args[0] not in COMMANDS:
        command = xl_args[0] if xl_args else ""
        print(f"xl: command not implemented by the stand-in: {command}", file=sys.stderr)
        return 1
    try:
        COMMANDS[xl_args[0]](state, xl_args[1:], use_loop)
    except XlFailure as error:
        print(error, file=sys.stderr)
        return 1
    except (OSError, subprocess.SubprocessError) as error:
        print(f"libxl: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
