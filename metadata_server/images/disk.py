"""The disk tools as Python: qemu-img (what an image is, converting), blkid and sfdisk
(what a disk holds), and loop devices and mounts as context managers.

A loop device is attached to one part of the file with `--offset`/`--sizelimit`, read
from `sfdisk --json`, not with `--partscan`: partition nodes (`/dev/loopNp1`) need the
kernel's partition scan and a devtmpfs or udev to create them, which containers and
hosts without udev lack (seen on this project's test machine), while an offset works
everywhere. Enter the managers with `interrupts.hold()`, so an attach or a mount is
always undone; their exits undo it with signals deferred, retrying a busy unmount.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server.images.errors import ImageError, ImageToolFailed
from metadata_server.images.interrupts import finish
from metadata_server.images.tools import Tools, run

BUSY_TRIES = 25  # an unmount or detach that is busy is tried again this often ...
BUSY_PAUSE = 0.2  # ... this many seconds apart (a killed tool's children exiting)
LOCKED = 'Failed to get shared "write" lock'
# qemu-img's names for the formats a master may have, by this project's names
QEMU_FORMATS = {"qcow2": "qcow2", "vhd": "vpc"}
CREATE_OPTIONS = {"vpc": ["-o", "subformat=dynamic,force_size=on"]}  # by qemu-img's name


@dataclass(frozen=True)
class ImageInfo:
    format: str  # qemu-img's name: raw, qcow2, vpc, ...
    virtual_size: int
    backing_file: str | None


def image_info(tools: Tools, path: Path, *, what: str) -> ImageInfo:
    """`qemu-img info` of `path`, `what` in messages. On a qcow2 or vhd file it takes
    QEMU's image lock: one that a running QEMU holds open for writing is refused as in
    use (on a raw file it does not: see convert())."""
    try:
        out = run([tools["qemu-img"], "info", "--output=json", str(path)])
    except ImageToolFailed as error:
        _refuse_if_locked(error, what, path)
        lines = [line for line in error.stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("qemu-img: ") if lines else "no reason given"
        raise ImageError(f"qemu-img cannot read {what} {path}: {reason}") from None
    data: dict[str, Any] = json.loads(out)
    return ImageInfo(
        format=str(data.get("format", "")),
        virtual_size=int(data.get("virtual-size", 0)),
        backing_file=data.get("backing-filename"),
    )


def _refuse_if_locked(error: ImageToolFailed, what: str, path: Path) -> None:
    if LOCKED in error.stderr:
        raise ImageError(
            f"{what} {path} is in use: a process holds QEMU's write lock on it "
            "(a running guest, qemu-io, qemu-nbd?)"
        ) from None


def convert(
    tools: Tools, source: Path, source_format: str, target: Path, target_format: str
) -> None:
    """`qemu-img convert` of `source` into the new file `target`. It takes QEMU's lock
    on `source`, which `qemu-img info` does not on a raw file: a raw source in use is
    found here."""
    argv = [tools["qemu-img"], "convert", "-f", source_format, "-O", target_format]
    argv += [*CREATE_OPTIONS.get(target_format, []), str(source), str(target)]
    try:
        run(argv, timeout=None)
    except ImageToolFailed as error:
        _refuse_if_locked(error, "the image", source)
        raise


def probe(tools: Tools, target: Path | str) -> dict[str, str]:
    """What blkid finds at the start of `target` (a file or a device): TYPE and USAGE of
    a filesystem, or PTTYPE of a partition table; {} when nothing is there."""
    try:
        out = run([tools["blkid"], "-p", "-o", "export", str(target)])
    except ImageToolFailed as error:
        if error.returncode == 2:  # nothing recognised
            return {}
        raise
    fields = (line.partition("=") for line in out.splitlines() if "=" in line)
    return {key: value for key, _, value in fields}


@dataclass(frozen=True)
class Partition:
    number: int
    offset: int  # bytes from the start of the disk
    size: int  # bytes


def partitions(tools: Tools, raw: Path) -> list[Partition]:
    """The partitions of the table on the raw disk `raw` (sfdisk --json)."""
    table = json.loads(run([tools["sfdisk"], "--json", str(raw)]))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    found = []
    for index, entry in enumerate(table.get("partitions", []), start=1):
        node = str(entry.get("node", ""))
        digits = node[len(node.rstrip("0123456789")) :]
        found.append(
            Partition(
                number=int(digits) if digits else index,
                offset=int(entry["start"]) * sector,
                size=int(entry["size"]) * sector,
            )
        )
    return found


@contextlib.contextmanager
def loop_device(tools: Tools, image: Path, *, offset: int = 0, size: int = 0) -> Iterator[str]:
    """`image` (from `offset`, `size` bytes; 0: to its end) on a new loop device."""
    argv = [tools["losetup"], "--find", "--show"]
    if offset:
        argv += ["--offset", str(offset)]
    if size:
        argv += ["--sizelimit", str(size)]
    device = run([*argv, str(image)]).strip()
    try:
        yield device
    finally:
        finish(lambda: _busy_retry([tools["losetup"], "--detach", device], f"detach {device}"))


@contextlib.contextmanager
def mounted(
    tools: Tools, device: str, mountpoint: Path, *, fstype: str, read_only: bool
) -> Iterator[Path]:
    """`device` mounted at `mountpoint`; nothing on it can be a device, run or setuid
    on the host (the image is the guest's, not ours)."""
    options = "nodev,nosuid,noexec" + (",ro" if read_only else "")
    if fstype == "xfs":
        options += ",nouuid"  # a copy of a disk this host has mounted has the same UUID
    run([tools["mount"], "-t", fstype, "-o", options, device, str(mountpoint)])
    try:
        yield mountpoint
    finally:
        finish(lambda: _busy_retry([tools["umount"], str(mountpoint)], f"unmount {mountpoint}"))


def trim_free_space(tools: Tools, mountpoint: Path) -> str:
    """Discard the free blocks of the filesystem at `mountpoint`: on a loop device that
    punches holes in the file, so removed files' old bytes are zeros (and take no room
    in a converted image). What happened, in words; a filesystem that cannot be trimmed
    is said, not an error."""
    os.sync()  # blocks freed by a transaction not yet committed cannot be trimmed
    try:
        run([tools["fstrim"], str(mountpoint)], timeout=None)
    except ImageToolFailed as error:
        return f"free space not trimmed (old bytes of removed files may remain): {error.detail}"
    return "free space trimmed (zeros)"


def _busy_retry(argv: list[str], what: str) -> None:
    for attempt in range(BUSY_TRIES):
        try:
            run(argv)
            return
        except ImageToolFailed as error:
            if "busy" not in error.stderr.lower() or attempt == BUSY_TRIES - 1:
                raise ImageToolFailed(
                    f"could not {what} (it is left as it is): {error.detail}"
                ) from None
        time.sleep(BUSY_PAUSE)
