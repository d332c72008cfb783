"""A throwaway busybox root filesystem, to run guest-side scripts the way a small guest would.

Used by the comparison harness (one shared image per method, a copy-on-write overlay per
guest) and by the test suite (tests/support/rootfs.py re-exports this module).

`build_rootfs(path, shell="busybox"|"dash"|"bash")` lays out a minimal guest in `path`: the
host's static busybox with every applet as a symlink, `/etc/passwd`, `/etc/shadow` (root
only, mode 640), `/etc/group`, `/etc/hosts`, `/etc/hostname`, and as `/bin/sh` either
busybox ash or the host's real dash or bash (copied with its shared libraries).
`Rootfs.add_binary()` copies more host programs in the same way (chpasswd, curl, ...).

`Rootfs.argv(command)` is the host command line that runs `command` chrooted into the tree,
inside new mount, UTS and PID namespaces (`unshare --mount --uts --pid --fork --kill-child`):

- `/dev` is a private tmpfs holding null, zero, random, urandom and the block devices you
  pass (same major/minor as on the host); `/proc` is a fresh procfs of the new PID namespace.
- `/sys`, `/run`, `/tmp` and everything else are plain directories of the tree, so a test
  fakes `/sys/hypervisor/uuid` or `/sys/class/net/eth0/address` by writing files.
- The hostname starts as `hostname=` (default "rootfs") and dies with the namespace; so do
  all mounts and processes, also when the command hangs and the caller kills `unshare`.
- The network namespace is the host's (a server on 127.0.0.1 is reachable from inside),
  or with `netns=NAME` a named one, e.g. a guest namespace from `netns.py`.
- With `overlay=Overlay(...)` the tree is a read-only lower layer shared by many guests:
  each guest's root is an overlayfs mounted (inside its own mount namespace only) with
  its own upper directory, so one image serves any number of guests and a guest's
  writes land in its upper directory. `binds=[(host_dir, "/inside")]` bind-mounts host
  directories into the guest the same way. Both vanish with the mount namespace: the
  host's mount table never sees them.

It never mounts anything in the caller's mount namespace and never changes the host's
files outside the trees it is given. Needs root, `unshare` (util-linux), `chroot`, `ldd`
and busybox-static at /bin/busybox.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"
TIMEOUT = 30  # seconds for each host helper (ldd, busybox --list-full)
SHELLS = ("busybox", "dash", "bash")
_DIRS = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "root",
    "dev",
    "proc",
    "sys",
    "run",
    "var/lib",
    "var/log",
    "tmp",
)
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHAR_DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}

# Runs (as the host's /bin/sh) inside the new namespaces, before the chroot.
_SETUP = """set -eu
root=$1; name=$2; shift 2
{overlay}
mount -t tmpfs -o mode=0755,size=4m rootfs-dev "$root/dev"
{mknods}
mount -t proc proc "$root/proc"
{binds}
exec chroot "$root" /bin/busybox sh -c 'hostname "$1" && shift && "$@"' sh "$name" "$@"
"""


def shared_libraries(binary: str) -> list[str]:
    """Absolute paths of the shared libraries (and the loader) `binary` needs; [] if static."""
    result = subprocess.run(
        ["ldd", binary], capture_output=True, text=True, check=False, timeout=TIMEOUT
    )
    libraries: list[str] = []
    for line in result.stdout.splitlines():
        words = line.split()
        if "=>" in words:
            index = words.index("=>") + 1
            if index < len(words) and words[index].startswith("/"):
                libraries.append(words[index])
        elif words and words[0].startswith("/"):
            libraries.append(words[0])
    return libraries


@dataclass(frozen=True)
class Overlay:
    """A guest's writable view of a shared tree: `upper` and `work` (empty directories on
    one filesystem) take its writes; `merged` (an empty directory) is where the overlay
    is mounted inside the guest's mount namespace."""

    upper: Path
    work: Path
    merged: Path

    @classmethod
    def under(cls, directory: Path) -> Overlay:
        """upper/, work/ and merged/ created in `directory`."""
        overlay = cls(directory / "upper", directory / "work", directory / "merged")
        for path in (overlay.upper, overlay.work, overlay.merged):
            path.mkdir(parents=True, exist_ok=True)
        return overlay

    def file(self, name: str) -> Path:
        """The host path of `name` in the guest's own layer (write here before boot)."""
        return self.upper / name.lstrip("/")


def _overlay_lines(lower: Path, overlay: Overlay | None) -> str:
    if overlay is None:
        return ""
    for path in (lower, overlay.upper, overlay.work, overlay.merged):
        if any(c in str(path) for c in ",:\\\n"):
            raise ValueError(f"{path}: overlayfs paths must not contain , : \\ or newlines")
    options = f"lowerdir={lower},upperdir={overlay.upper},workdir={overlay.work}"
    return f'mount -t overlay rootfs-overlay -o {shlex.quote(options)} "$root"'


def _bind_lines(binds: Sequence[tuple[Path, str]]) -> str:
    lines = []
    for host, inside in binds:
        target = '"$root"' + shlex.quote("/" + inside.strip("/"))
        lines.append(f"mkdir -p {target} && mount --bind {shlex.quote(str(host))} {target}")
    return "\n".join(lines)


@dataclass
class Rootfs:
    path: Path
    shell: str = "busybox"

    def file(self, name: str) -> Path:
        """The host path of `name` (an absolute path inside the tree)."""
        return self.path / name.lstrip("/")

    def write(self, name: str, content: str | bytes, mode: int = 0o644) -> Path:
        target = self.file(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
        os.chmod(target, mode)
        return target

    def read(self, name: str) -> str:
        return self.file(name).read_text()

    def add_binary(self, host_path: str, name: str | None = None) -> Path:
        """Copy a host program to `name` (default: the same path) with its shared libraries."""
        source = shutil.which(host_path, path=_HOST_PATH) or host_path
        for library in shared_libraries(source):
            target = self.file(library)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(library, target)  # follows symlinks: the real file, the soname path
        target = self.file(name or source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copy2(source, target)
        return target

    def argv(
        self,
        command: Sequence[str],
        *,
        block_devices: Sequence[str] = (),
        hostname: str = "rootfs",
        netns: str | None = None,
        overlay: Overlay | None = None,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> list[str]:
        """The host argv that runs `command` inside the tree (see the module docstring)."""
        mknods = [
            f'mknod -m 666 "$root/dev/{name}" c {major} {minor}'
            for name, (major, minor) in _CHAR_DEVICES.items()
        ]
        for device in block_devices:
            info = os.stat(device)
            if not stat.S_ISBLK(info.st_mode):
                raise ValueError(f"{device} is not a block device")
            inside = "$root/dev/" + shlex.quote(os.path.relpath(device, "/dev"))
            mknods.append(
                f'mkdir -p "$(dirname {inside})" && mknod -m 660 {inside} b '
                f"{os.major(info.st_rdev)} {os.minor(info.st_rdev)}"
            )
        setup = _SETUP.format(
            overlay=_overlay_lines(self.path, overlay),
            mknods="\n".join(mknods),
            binds=_bind_lines(binds),
        )
        enter = ["ip", "netns", "exec", netns] if netns else []
        root = overlay.merged if overlay is not None else self.path
        return [
            *enter,
            "unshare",
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "/bin/sh",
            "-c",
            setup,
            "rootfs-setup",
            str(root),
            hostname,
            *command,
        ]

    def run(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        block_devices: Sequence[str] = (),
        hostname: str = "rootfs",
        netns: str | None = None,
        overlay: Overlay | None = None,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` inside the tree and wait; stdout and stderr are captured as text."""
        return subprocess.run(
            self.argv(
                command,
                block_devices=block_devices,
                hostname=hostname,
                netns=netns,
                overlay=overlay,
                binds=binds,
            ),
            env=environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def run_async(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        block_devices: Sequence[str] = (),
        hostname: str = "rootfs",
        netns: str | None = None,
        overlay: Overlay | None = None,
        binds: Sequence[tuple[Path, str]] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Like `run`, without blocking the event loop (for servers in the same loop)."""
        argv = self.argv(
            command,
            block_devices=block_devices,
            hostname=hostname,
            netns=netns,
            overlay=overlay,
            binds=binds,
        )
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=environment(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()  # --kill-child takes the whole PID namespace with it
            await process.wait()
            raise
        assert process.returncode is not None
        return subprocess.CompletedProcess(
            argv,
            process.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )


def environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """A small, predictable environment: the host's proxies and locale do not leak in."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "TERM": "dumb"}
    env.update(extra or {})
    return env


def build_rootfs(path: Path, *, shell: str = "busybox", binaries: Sequence[str] = ()) -> Rootfs:
    """A minimal busybox guest in `path` (created if missing) with `shell` as /bin/sh."""
    if shell not in SHELLS:
        raise ValueError(f"shell must be one of {SHELLS}")
    path.mkdir(parents=True, exist_ok=True)
    for name in _DIRS:
        (path / name).mkdir(parents=True, exist_ok=True)
    os.chmod(path / "tmp", 0o1777)  # noqa: S103 (a guest's /tmp)
    os.chmod(path / "root", 0o700)
    shutil.copy2(BUSYBOX, path / "bin/busybox")
    listing = subprocess.run(
        [BUSYBOX, "--list-full"], capture_output=True, text=True, check=True, timeout=TIMEOUT
    )
    for applet in listing.stdout.split():
        link = path / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    rootfs = Rootfs(path, shell)
    if shell != "busybox":
        rootfs.add_binary(shell, f"/bin/{shell}")
        (path / "bin/sh").unlink()
        (path / "bin/sh").symlink_to(shell)
    for binary in binaries:
        rootfs.add_binary(binary)
    rootfs.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    rootfs.write("/etc/group", "root:x:0:\nshadow:x:42:\n")
    rootfs.write("/etc/shadow", "root:*:19000:0:99999:7:::\n", mode=0o640)
    rootfs.write("/etc/hostname", "template\n")
    rootfs.write("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n::1\tlocalhost\n")
    return rootfs
