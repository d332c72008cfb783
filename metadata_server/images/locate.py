"""Where on a disk the Linux root filesystem is: the whole disk, or one partition.

A Linux root is a filesystem with a directory /etc and a /usr or /bin. A disk that
starts with a filesystem is taken whole; one with a partition table has each partition
that holds a filesystem mounted read-only and looked at. Exactly one must be a Linux
root: none, or several (which one would the guest boot?), is an error that names what
each part holds. Mounting is done on the working copy, never on the source image.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from metadata_server.images.disk import Partition, loop_device, mounted, partitions, probe
from metadata_server.images.errors import ImageError, ImageToolFailed
from metadata_server.images.interrupts import hold, holdings
from metadata_server.images.tools import Tools


@dataclass(frozen=True)
class RootLocation:
    offset: int  # bytes; 0 with size 0: the whole disk
    size: int
    fstype: str
    where: str  # "the whole disk" or "partition 2", for messages and the record


def kernel_filesystems() -> set[str]:
    with open("/proc/filesystems") as listing:
        return {line.split()[-1] for line in listing if line.strip()}


def is_linux_root(top: Path) -> bool:
    def directory(name: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(top / name).st_mode)
        except OSError:
            return False

    return directory("etc") and (directory("usr") or os.path.lexists(top / "bin"))


def locate_root(tools: Tools, raw: Path, mountpoint: Path, *, source: Path) -> RootLocation:
    """The one Linux root on the raw disk `raw` (a copy of `source`), looked at through
    the empty directory `mountpoint`."""
    top = probe(tools, raw)
    if "PTTYPE" in top:
        parts = partitions(tools, raw)
        if not parts:
            raise ImageError(f"{source} has a partition table ({top['PTTYPE']}) with no partitions")
    elif top.get("USAGE") == "filesystem":
        parts = [Partition(number=0, offset=0, size=0)]
    else:
        raise ImageError(
            f"{source} holds neither a partition table nor a filesystem: not a disk image "
            "with a Linux root"
        )
    known = kernel_filesystems()
    roots: list[RootLocation] = []
    seen: list[str] = []
    for part in parts:
        where = f"partition {part.number}" if part.number else "the whole disk"
        with holdings() as stack:
            device = hold(stack, loop_device(tools, raw, offset=part.offset, size=part.size))
            found = probe(tools, device)
            fstype = found.get("TYPE", "")
            if found.get("USAGE") != "filesystem":
                seen.append(f"{where}: {fstype or 'no filesystem'}")
                continue
            if fstype not in known:
                seen.append(f"{where}: {fstype}, which this kernel cannot mount")
                continue
            try:
                hold(stack, mounted(tools, device, mountpoint, fstype=fstype, read_only=True))
            except ImageToolFailed as error:
                seen.append(f"{where}: {fstype} that cannot be mounted ({error.detail})")
                continue
            if not is_linux_root(mountpoint):
                seen.append(f"{where}: {fstype} without /etc and /usr or /bin")
                continue
        roots.append(RootLocation(part.offset, part.size, fstype, where))
        seen.append(f"{where}: {fstype}, a Linux root")
    if len(roots) == 1:
        return roots[0]
    if not roots:
        raise ImageError(
            f"{source} has no Linux root filesystem (one with /etc and /usr or /bin): "
            + "; ".join(seen)
        )
    raise ImageError(
        f"{source} has several Linux root filesystems ({', '.join(r.where for r in roots)}): "
        "which one the guest boots is not clear; give an image with one"
    )
