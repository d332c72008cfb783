"""What a comparison may have left behind, looked for where it could be: named network
namespaces with its prefix, links with its prefix in the host's namespace, loop devices
backed by files below its directory, mounts below its directory, processes whose command
line names its directory or whose root is below it (a guest), and its directory itself.

`find_leftovers()` only looks; `sweep()` removes what it finds (loop devices detached,
mounts lazily unmounted, processes killed, namespaces deleted, the directory removed) as
the last resort after an interrupted or failed run. Neither touches anything outside
the comparison's prefix and directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from metadata_server_testbed.compare.netns import ip_batch, namespaces

TIMEOUT = 20


@dataclass
class Scope:
    prefix: str  # namespace (and host link) names start with it
    directory: Path


def _under(path: str, directory: Path) -> bool:
    base = str(directory)
    return path == base or path.startswith(base.rstrip("/") + "/")


def loop_devices(directory: Path) -> list[str]:
    """Loop devices whose backing file is below `directory` (deleted or not)."""
    result = subprocess.run(
        ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if not result.stdout.strip():
        return []
    devices = json.loads(result.stdout).get("loopdevices", [])
    found = []
    for entry in devices:
        back = (entry.get("back-file") or "").removesuffix(" (deleted)")
        if _under(back, directory):
            found.append(f"{entry['name']} ({back})")
    return found


def mounts(directory: Path) -> list[str]:
    """Mount points below `directory` in the host's mount namespace."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if _under(point, directory):
                found.append(point)
    return found


def host_links(prefix: str) -> list[str]:
    result = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    names = [line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines()]
    return [name for name in names if name.startswith(prefix)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _root(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


def processes(scope: Scope) -> list[int]:
    """Live processes whose command line names the directory, or whose root (a guest's
    chroot) is below it."""
    own = os.getpid()
    found = []
    marker = str(scope.directory)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == own:
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue  # a zombie holds nothing; its parent reaps it
        if marker in _cmdline(pid) or _under(_root(pid), scope.directory):
            found.append(pid)
    return found


def find_leftovers(scope: Scope) -> list[str]:
    found = [f"network namespace {n}" for n in namespaces() if n.startswith(scope.prefix)]
    found += [f"link {name}" for name in host_links(scope.prefix)]
    found += [f"loop device {device}" for device in loop_devices(scope.directory)]
    found += [f"mount {point}" for point in mounts(scope.directory)]
    found += [f"process {pid}: {_cmdline(pid)[:120]}" for pid in processes(scope)]
    if scope.directory.exists():
        found.append(f"directory {scope.directory}")
    return found


def _detach(devices: Iterable[str]) -> None:
    for device in devices:
        name = device.split()[0]
        subprocess.run(["losetup", "-d", name], capture_output=True, timeout=TIMEOUT, check=False)


def sweep(scope: Scope) -> None:
    """Remove whatever of the comparison is still there (see the module docstring)."""
    for pid in processes(scope):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for point in sorted(mounts(scope.directory), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=TIMEOUT, check=False)
    _detach(loop_devices(scope.directory))
    stale = [name for name in namespaces() if name.startswith(scope.prefix)]
    with contextlib.suppress(RuntimeError):
        ip_batch(f"netns delete {name}" for name in stale)
    for name in host_links(scope.prefix):
        subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=TIMEOUT)
    shutil.rmtree(scope.directory, ignore_errors=True)
