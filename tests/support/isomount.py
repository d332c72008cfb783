"""Reading ISO 9660 images on test machines whose kernel has no iso9660 driver.

Such a kernel (no iso9660 in /proc/filesystems, no modules to load) cannot mount the
configuration ISO the way a guest's kernel does. Two stand-ins make the honest check
possible, each used only when the kernel lacks iso9660:

- `mounted_iso(image, mountpoint)`: the image mounted read-only on the host, by the
  kernel when it can, else by `fuseiso` (Debian package fuseiso, FUSE), for readers such
  as cloud-init's;
- `install_iso9660_standin(rootfs)`: puts `tests/support/mount.iso9660` (the stand-in
  for the kernel's driver: mount(8) runs /sbin/mount.<type> when the kernel cannot mount
  <type>) and fuseiso into a guest root, so the guest script's own `mount` works.

Everything mounted is unmounted on the way out, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import metadata_server_testbed.compare

from tests.support.requirements import need_root, need_tools
from tests.support.rootfs import Rootfs

STANDIN = Path(metadata_server_testbed.compare.__file__).with_name(
    "mount.iso9660"
)  # one copy, shipped
TIMEOUT = 20


def kernel_has(filesystem: str) -> bool:
    with open("/proc/filesystems") as listing:
        return any(line.split()[-1] == filesystem for line in listing if line.strip())


def need_iso_reader() -> dict[str, str]:
    """Root, and fuseiso where the kernel cannot mount iso9660 itself."""
    need_root()
    if kernel_has("iso9660"):
        return need_tools("mount", "umount")
    return need_tools("fuseiso", "fusermount", "umount")


def _mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts if line.strip())


@contextlib.contextmanager
def mounted_iso(image: Path, mountpoint: Path) -> Iterator[Path]:
    """`image` mounted read-only at `mountpoint` (created if missing) for the block."""
    tools = need_iso_reader()
    mountpoint.mkdir(parents=True, exist_ok=True)
    if kernel_has("iso9660"):
        argv = [tools["mount"], "-t", "iso9660", "-o", "ro,loop", str(image), str(mountpoint)]
    else:
        # -n: keep no ~/.mtab.fuseiso; no -p: it would delete the mount point on exit
        argv = [tools["fuseiso"], "-n", str(image), str(mountpoint), "-o", "ro"]
    subprocess.run(argv, check=True, capture_output=True, timeout=TIMEOUT)
    try:
        yield mountpoint
    finally:
        unmount = (
            [tools["umount"], str(mountpoint)]
            if kernel_has("iso9660")
            else [tools["fusermount"], "-u", str(mountpoint)]
        )
        if subprocess.run(unmount, capture_output=True, timeout=TIMEOUT).returncode != 0:
            subprocess.run(
                [tools["umount"], "-l", str(mountpoint)], capture_output=True, timeout=TIMEOUT
            )
        assert not _mounted(mountpoint), f"{mountpoint} is still mounted"


def install_iso9660_standin(rootfs: Rootfs) -> None:
    """Make `mount -t iso9660` work inside `rootfs` on this kernel (see the docstring)."""
    if kernel_has("iso9660"):
        return  # the kernel mounts it, as on a real guest
    need_tools("fuseiso")
    rootfs.add_binary("fuseiso", "/usr/bin/fuseiso")
    target = rootfs.file("/sbin/mount.iso9660")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copyfile(STANDIN, target)
    os.chmod(target, 0o755)  # noqa: S103 (a program)
