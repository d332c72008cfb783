"""Small disk images for `image prepare`, built once per session with the real tools, a
guard that every test using loop devices or mounts leaves none behind, and `refused`:
a command's one error line, checked to have changed nothing.

Images (the tests never write them; a test that needs to lock one uses a copy):
- `whole`: a whole-disk ext4 filesystem holding a tiny Debian-like root (systemd marker,
  SSH host keys, a machine-id with content, /var/lib/dbus/machine-id an absolute link to
  /etc/machine-id as on Debian, a stale /var/lib/metadata-init/instance), raw and qcow2;
- `partitioned`: GPT with a small /boot-like ext4 first and the root second;
- `ambiguous`: GPT with two roots; `no_root`: ext4 without /etc; `text`: not a disk;
- `big`: the root with 6 MiB of random data (a disk-full test fills 4 MiB with it);
- `sysv`: the root without systemd (install.sh then uses /etc/rc.local);
- `escaping`: a root whose /etc/systemd is an absolute link (it would lead to the host's).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.cli.main import main
from tests.support.requirements import need_root, need_tools, root_fixture

TOOLS = ("qemu-img", "qemu-io", "losetup", "mount", "umount", "blkid", "sfdisk", "mkfs.ext4")
TIMEOUT = 120
SECTOR = 512
MACHINE_ID = "0123456789abcdef0123456789abcdef\n"
HOST_KEYS = ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key")


def sh(*argv: str | Path) -> str:
    return subprocess.run(
        [str(a) for a in argv], check=True, capture_output=True, text=True, timeout=TIMEOUT
    ).stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tree(
    top: Path, *, linux: bool = True, systemd: bool = True, payload: int = 0, escaping: bool = False
) -> Path:
    def put(relative: str, text: str = "", mode: int = 0o644) -> None:
        path = top / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    top.mkdir(parents=True)
    put("boot/vmlinuz", "not a kernel")
    if not linux:
        return top
    put("etc/machine-id", MACHINE_ID, 0o444)
    put("etc/hostname", "template\n")
    put("etc/dhcp/dhclient.conf", "request subnet-mask, routers;\n")
    put("etc/ssh/sshd_config", "PermitRootLogin prohibit-password\n")
    for key in HOST_KEYS:
        put(f"etc/ssh/{key}", f"{key} of the template\n", 0o600)
    put("usr/bin/true")
    put("usr/sbin/init")
    (top / "bin").symlink_to("usr/bin")
    (top / "lib").symlink_to("usr/lib")
    if systemd:
        put("usr/lib/systemd/systemd", "", 0o755)
    else:
        put("etc/rc.local", "#!/bin/sh -e\n/usr/local/bin/site-setup\nexit 0\n", 0o755)
    put("var/lib/metadata-init/instance", "i-template mac uuid\n")
    put("var/lib/systemd/random-seed", "seed")
    (top / "var/lib/dbus").mkdir(parents=True)
    (top / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    if escaping:
        (top / "etc/systemd").symlink_to("/etc/systemd")
    if payload:
        (top / "srv").mkdir()
        (top / "srv/payload").write_bytes(os.urandom(payload))
    return top


def ext4(tree: Path, image: Path, size_mib: int, *, offset: int = 0) -> None:
    if not image.exists():
        with open(image, "wb") as handle:
            handle.truncate(size_mib << 20)
    extra = ["-E", f"offset={offset}"] if offset else []
    sh("mkfs.ext4", "-q", "-F", "-d", tree, "-L", "root", *extra, image, f"{size_mib}M")


def gpt(image: Path, size_mib: int, parts: list[int]) -> list[int]:
    """`image` with a GPT of partitions of `parts` MiB each (the last takes the rest);
    their byte offsets."""
    with open(image, "wb") as handle:
        handle.truncate(size_mib << 20)
    lines, offsets, start = ["label: gpt"], [], 2048
    for size in parts:
        lines.append(f"start={start}, size={size << 11}, type=linux")
        offsets.append(start * SECTOR)
        start += size << 11
    subprocess.run(
        ["sfdisk", "-q", str(image)], input="\n".join(lines) + "\n", text=True, check=True,
        capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    return offsets


@dataclass(frozen=True)
class Sources:
    whole: Path
    whole_qcow2: Path
    partitioned: Path
    partitioned_root_offset: int
    ambiguous: Path
    no_root: Path
    text: Path
    big: Path
    sysv: Path
    escaping: Path

    def digests(self) -> dict[str, str]:
        return {name: sha256(getattr(self, name)) for name in SOURCE_NAMES}


SOURCE_NAMES = ("whole", "whole_qcow2", "partitioned", "ambiguous", "no_root", "big", "sysv")


@pytest.fixture(scope="session")
@root_fixture
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    need_root()
    need_tools(*TOOLS)
    top = tmp_path_factory.mktemp("sources")
    root, boot = write_tree(top / "root"), write_tree(top / "boot", linux=False)
    ext4(root, top / "whole.raw", 24)
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", top / "whole.raw", top / "whole.qcow2")
    offsets = gpt(top / "partitioned.raw", 40, [8, 30])
    ext4(boot, top / "partitioned.raw", 8, offset=offsets[0])
    ext4(root, top / "partitioned.raw", 24, offset=offsets[1])
    offsets2 = gpt(top / "ambiguous.raw", 60, [28, 28])
    for offset in offsets2:
        ext4(root, top / "ambiguous.raw", 24, offset=offset)
    ext4(boot, top / "no_root.raw", 8)
    (top / "text.raw").write_text("not a disk image\n" * 100)
    ext4(write_tree(top / "big", payload=6 << 20), top / "big.raw", 24)
    ext4(write_tree(top / "sysv", systemd=False), top / "sysv.raw", 24)
    ext4(write_tree(top / "escaping", escaping=True), top / "escaping.raw", 24)
    found = Sources(
        whole=top / "whole.raw",
        whole_qcow2=top / "whole.qcow2",
        partitioned=top / "partitioned.raw",
        partitioned_root_offset=offsets[1],
        ambiguous=top / "ambiguous.raw",
        no_root=top / "no_root.raw",
        text=top / "text.raw",
        big=top / "big.raw",
        sysv=top / "sysv.raw",
        escaping=top / "escaping.raw",
    )
    before = found.digests()
    yield found
    assert found.digests() == before, "a source image was written"


def leftovers(under: Path) -> list[str]:
    """Loop devices on files, mounts, and processes (a qemu-img, a losetup) under `under`."""
    prefix = str(under)
    found = []
    listing = json.loads(sh("losetup", "--list", "--json", "--output", "NAME,BACK-FILE") or "{}")
    for device in listing.get("loopdevices", []):
        if (device.get("back-file") or "").startswith(prefix):
            found.append(f"loop {device['name']} on {device['back-file']}")
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(prefix) and not target.endswith("/tmpfs"):
                found.append(f"mount {target}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if int(pid) != os.getpid() and any(prefix.encode() in a for a in argv[1:]):
                found.append(f"process {pid}: {b' '.join(argv).decode(errors='replace')}")
    return found


def _force_clean(under: Path) -> None:
    """What a failed test left: unmounted and detached, so the next test starts clean."""
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    for target in reversed(targets):
        if target.startswith(str(under)):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=TIMEOUT)
    listing = json.loads(sh("losetup", "--list", "--json", "--output", "NAME,BACK-FILE") or "{}")
    for device in listing.get("loopdevices", []):
        if (device.get("back-file") or "").startswith(str(under)):
            subprocess.run(["losetup", "-d", device["name"]], capture_output=True, timeout=TIMEOUT)


@pytest.fixture
@root_fixture
def clean(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path`, checked at the end for loop devices, mounts and processes under it
    (removed if any, then the test fails). Mounts the test made itself at `.../tmpfs`
    are the test's to undo."""
    need_root()
    need_tools(*TOOLS)
    yield tmp_path
    left = leftovers(tmp_path)
    _force_clean(tmp_path)
    assert left == []


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs at `path` (named `tmpfs`, created) for the block; unmounted after."""
    assert path.name == "tmpfs"
    path.mkdir()
    sh("mount", "-t", "tmpfs", "-o", options, "tmpfs", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=TIMEOUT)


@contextlib.contextmanager
def opened(master: Path, scratch: Path, *, offset: int = 0) -> Iterator[Path]:
    """The root filesystem of `master` (at `offset` of its disk), mounted read-only from
    a raw copy: what a clone boots from, read with the tools alone."""
    raw = scratch / f"{master.name}.check.raw"
    sh("qemu-img", "convert", "-O", "raw", master, raw)
    device = sh("losetup", "--find", "--show", "--read-only", "--offset", str(offset), raw).strip()
    top = scratch / f"{master.name}.check"
    top.mkdir()
    try:
        sh("mount", "-o", "ro,noload", device, top)
        try:
            yield top
        finally:
            sh("umount", top)
    finally:
        sh("losetup", "-d", device)
        raw.unlink()
        top.rmdir()


def _write_locked(image: Path) -> bool:
    """Whether a QEMU holds its write permission lock (byte 101, an OFD lock) on `image`:
    read from /proc/locks, so the look takes no lock that could race qemu-io's."""
    info = image.stat()
    file_id = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if (
                len(fields) >= 8
                and (fields[1], fields[5]) == ("OFDLCK", file_id)
                and int(fields[6]) <= 101 <= int(fields[7])
            ):
                return True
    return False


@contextlib.contextmanager
def holding_open(image: Path, fmt: str) -> Iterator[subprocess.Popen[str]]:
    """qemu-io with `image` open for writing (QEMU's write lock held) for the block."""
    process = subprocess.Popen(
        ["qemu-io", "-f", fmt, str(image)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        for _ in range(200):
            if _write_locked(image):
                break
            time.sleep(0.05)
        else:
            pytest.fail("qemu-io did not take its lock")
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], directory: Path) -> str:
    """The one error line of `metadata-server ARGV`, which must change nothing in
    `directory`."""
    before = listing(directory)
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("metadata-server: ")]
    assert code == 1, err
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    assert listing(directory) == before
    return errors[0]
