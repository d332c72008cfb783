"""The simulated guests' root filesystem: one image, built once and shared read-only by
every guest of a run (each guest writes to its own overlay, see `rootfs.Overlay`).

The image is a busybox guest (`rootfs.build_rootfs`) with guest_init installed by its own
installer (`install.sh --root`), the harness's init (`compare-boot`) and udhcpc script,
the real `xenstore-write` with its libraries, and, where this machine's kernel has no
iso9660, the `mount.iso9660` stand-in with fuseiso (see that script). The guest_init
files come from the installed package data (`guest_init`), or from the source tree.

Writes only below the directory it is given; never runs anything inside the image.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from metadata_server_testbed.compare.rootfs import Rootfs, build_rootfs

log = logging.getLogger(__name__)

GUEST_INIT_FILES = ("install.sh", "metadata-init", "dhcp-hook", "metadata-init.service")
BOOT = "/sbin/compare-boot"
UDHCPC_SCRIPT = "/etc/udhcpc.script"
XENSTORE_WRITE = "xenstore-write"
FUSEISO = "fuseiso"
ISO_STANDIN = "/sbin/mount.iso9660"
INSTALL_TIMEOUT = 60
# Host programs the image needs besides busybox (found on PATH when it is built).
REQUIRED_TOOLS = ("busybox", "unshare", "chroot", "ldd", XENSTORE_WRITE)


def kernel_has(filesystem: str) -> bool:
    with open("/proc/filesystems", encoding="ascii") as listing:
        return any(line.split()[-1] == filesystem for line in listing if line.strip())


def needs_iso_standin() -> bool:
    """True where the kernel cannot mount iso9660 itself (then fuseiso stands in)."""
    return not kernel_has("iso9660")


def _package_file(name: str) -> bytes:
    return importlib.resources.files("metadata_server_testbed.compare").joinpath(name).read_bytes()


def copy_guest_init(target: Path) -> Path:
    """The guest_init files as the installed product ships them, copied into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    source = importlib.resources.files("metadata_server.guest_init")
    contents = {name: source.joinpath(name).read_bytes() for name in GUEST_INIT_FILES}
    for name, data in contents.items():
        (target / name).write_bytes(data)
        os.chmod(target / name, 0o755)  # noqa: S103 (programs in a guest root)
    return target


def build_image(path: Path) -> Rootfs:
    """Lay out the shared guest image in `path` (created; must not exist yet)."""
    path.mkdir(parents=True)
    rootfs = build_rootfs(path)
    with tempfile.TemporaryDirectory(prefix="guest-init-") as scratch:
        files = copy_guest_init(Path(scratch))
        subprocess.run(
            ["sh", str(files / "install.sh"), "--root", str(path), "--init", "rc.local"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
        )
    rootfs.write(BOOT, _package_file("compare-boot"), mode=0o755)
    rootfs.write(UDHCPC_SCRIPT, _package_file("udhcpc.script"), mode=0o755)
    rootfs.add_binary(XENSTORE_WRITE)
    if needs_iso_standin():
        rootfs.add_binary(FUSEISO, "/usr/bin/fuseiso")
        target = rootfs.file(ISO_STANDIN)
        if target.is_symlink() or target.exists():
            target.unlink()  # busybox's applet link, if any
        rootfs.write(ISO_STANDIN, _package_file("mount.iso9660"), mode=0o755)
    for name in ("/run/xen", "/run/metadata-init"):
        rootfs.file(name).mkdir(parents=True, exist_ok=True)
    log.info("guest image built in %s", path)
    return rootfs


def image_tools() -> tuple[str, ...]:
    """Host programs building and booting the image needs."""
    return (*REQUIRED_TOOLS, FUSEISO) if needs_iso_standin() else REQUIRED_TOOLS


def remove_image(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
