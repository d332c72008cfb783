"""The programs image work runs, found before anything is made, and run with argv lists.

Every tool is looked up on PATH at the start of a command, all at once, so a missing one
is named (with the Debian package that has it) before any file, loop device or mount
exists. Each runs in a session of its own: a Ctrl-C at the terminal reaches this process
alone, which then ends the tool's whole process group and cleans up, instead of a tool
dying halfway through an attach or a mount that nobody then knows about.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from metadata_server.images.errors import ImageToolFailed, command_failed

QUICK = 60.0  # seconds for a tool that does not copy an image (losetup, mount, blkid, ...)

# Where each tool comes from on Debian; vhd-util is in no Debian package.
PACKAGES = {
    "qemu-img": "qemu-utils",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "sfdisk": "fdisk",
    "fstrim": "util-linux",
    "sh": "dash",
}
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
PREPARE_TOOLS = ("qemu-img", "losetup", "mount", "umount", "blkid", "sfdisk", "fstrim", "sh")
VHD_UTIL_MISSING = (
    "vhd-util is not installed: `--format vhd` needs it (blktap's vhd-util, which Debian "
    "does not package: build it from Xen's blktap sources), or use --format qcow2"
)


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the tools a command needs, by name."""

    paths: Mapping[str, str]

    def __getitem__(self, name: str) -> str:
        return self.paths[name]


def find_tools(*names: str) -> Tools:
    """The tools `names` on PATH; ImageToolFailed naming every missing one."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        path = shutil.which(name)
        if path is not None:
            found[name] = path
            continue
        elsewhere = next(
            (d for d in SYSTEM_DIRS if os.access(Path(d, name), os.X_OK)),
            None,
        )
        if name == "vhd-util" and elsewhere is None:
            raise ImageToolFailed(VHD_UTIL_MISSING)
        if elsewhere is not None:
            missing.append(f"{name} (in {elsewhere}, which is not on PATH)")
        else:
            missing.append(f"{name} (Debian package {PACKAGES.get(name, name)})")
    if missing:
        raise ImageToolFailed(f"missing: {', '.join(missing)}; nothing was done")
    return Tools(found)


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = QUICK,
    umask: int = -1,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run `argv`; its stdout, or ImageToolFailed with its stderr. On any exception
    (KeyboardInterrupt, Terminated, the timeout) the tool's process group is killed and
    reaped before the exception goes on."""
    argv = list(argv)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            umask=umask,
            env=env,
        )
    except OSError as exc:
        raise ImageToolFailed(f"cannot run {argv[0]}: {exc.strerror}", argv=argv) from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(process)
        raise ImageToolFailed(f"{argv[0]} did not finish in {timeout:g} s", argv=argv) from None
    except BaseException:
        _end(process)
        raise
    if process.returncode != 0:
        raise command_failed(argv, process.returncode, stderr)
    return stdout


def _end(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
