"""Which kernel a launched guest boots, checked on this Dom0 before anything is made.

The default is pvgrub2 (`grub-x86_64-xen.bin`, Debian package grub-xen-bin): a PV
GRUB that reads the guest's own /boot/grub/grub.cfg from its disk, so the master's
kernel and its updates are the guest's, and nothing outside the image has to match it.
An admin may instead give a kernel (and ramdisk) on Dom0 for xl to boot directly, as
the Xen lab does with the master's kernel copied out: then the kernel command line
names the root device, /dev/xvda or the partition `image prepare` found the root on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from metadata_server.errors import InvalidInput
from metadata_server.launch.errors import ToolMissing

PVGRUB = Path("/usr/lib/grub-xen/grub-x86_64-xen.bin")
CONSOLE = "console=hvc0"
_PARTITION_RE = re.compile(r"partition ([0-9]{1,3})\b")


@dataclass(frozen=True)
class Boot:
    kernel: str
    ramdisk: str | None = None
    extra: str | None = None  # the kernel command line; None for pvgrub2

    @property
    def pvgrub(self) -> bool:
        return self.extra is None


def root_device(root: str, vdev: str = "xvda") -> str:
    """The guest's root device from a master record's `root` ("the whole disk (ext4)",
    "partition 2 (ext4)")."""
    match = _PARTITION_RE.search(root)
    return f"/dev/{vdev}{match.group(1)}" if match else f"/dev/{vdev}"


def choose_boot(
    kernel: str | None, ramdisk: str | None, *, root: str, pvgrub: Path = PVGRUB
) -> Boot:
    """The admin's kernel and ramdisk, checked, or else pvgrub2, checked."""
    if kernel is None:
        if not os.access(pvgrub, os.R_OK):
            raise ToolMissing(
                f"pvgrub2 is not installed: {pvgrub} is missing (Debian package grub-xen-bin); "
                "install it, or give kernel (and ramdisk) for xl to boot directly"
            )
        return Boot(kernel=str(pvgrub))
    for name, path in (("kernel", kernel), ("ramdisk", ramdisk)):
        if path is not None and not os.access(path, os.R_OK):
            raise InvalidInput(f"{name} {path} is not a readable file on this Dom0", field=name)
    return Boot(kernel=kernel, ramdisk=ramdisk, extra=f"root={root_device(root)} ro {CONSOLE}")
