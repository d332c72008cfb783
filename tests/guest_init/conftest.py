"""Shared pieces for the guest boot script tests: a guest rootfs with metadata-init installed.

A `Guest` is a busybox rootfs (tests/support/rootfs.py) into which guest_init/install.sh
installed the script; `boot()` runs it chrooted in fresh mount, UTS and PID namespaces and
returns its exit code, output and the hostname it left in its UTS namespace. The server it
talks to shares the host network namespace, so the guest's address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.guest_init.stub import Stub
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.rootfs import Rootfs, build_rootfs

GUEST_INIT = Path(__file__).resolve().parents[2] / "guest_init"
MAC = mac_of(1)
UUID = "6f1c0b1e-3b0a-4d7e-9a51-2f0d3c4b5a69"
# Every shell the script must run under, with what each rootfs adds to busybox.
SHELLS = {
    "busybox": (),  # busybox wget; no chpasswd, so /etc/shadow is edited directly
    "dash": ("chpasswd",),  # busybox wget, real chpasswd
    "bash": ("chpasswd", "curl"),  # curl, real chpasswd
}
# Runs inside the guest's namespaces; what it prints afterwards is only visible from there.
_BOOT = """metadata-init "$@"; rc=$?
echo "mounts=$(grep -c ' /run/metadata-init' /proc/mounts)"
echo "hostname=$(hostname)"
exit $rc"""


def ed25519_key(seed: int, comment: str) -> str:
    """A well-formed (not usable) OpenSSH ed25519 public key."""
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


def key_id(line: str) -> str:
    return " ".join(line.split()[:2])


@dataclass
class Boot:
    returncode: int
    hostname: str  # the hostname left in the UTS namespace
    mounts: int  # mounts under /run/metadata-init left in the mount namespace
    stdout: str
    stderr: str


@dataclass
class Guest:
    rootfs: Rootfs

    @property
    def shell(self) -> str:
        return self.rootfs.shell

    def configure(self, **settings: object) -> None:
        """Write /etc/metadata-init.conf (key=value lines)."""
        lines = "".join(f"{key}={value}\n" for key, value in settings.items())
        self.rootfs.write("/etc/metadata-init.conf", lines)

    def set_identity(self, uuid: str = UUID, mac: str = MAC) -> None:
        self.rootfs.write("/sys/hypervisor/uuid", uuid + "\n")
        self.rootfs.write("/sys/class/net/eth0/address", mac + "\n")
        self.rootfs.file("/sys/class/net/eth0/device").mkdir(parents=True, exist_ok=True)
        self.rootfs.write("/sys/class/net/lo/address", "00:00:00:00:00:00\n")

    async def boot(
        self,
        *args: str,
        block_devices: Sequence[str] = (),
        env: dict[str, str] | None = None,
        timeout: float = 60,
        wrap: Sequence[str] = (),
    ) -> Boot:
        """Run metadata-init ARGS in the guest; `wrap` is an argv that runs it (it ends with
        the command to run, as `exec "$@"` would take it)."""
        result = await self.rootfs.run_async(
            [*wrap, "/bin/sh", "-c", _BOOT, "boot", *args],
            block_devices=block_devices,
            hostname="template",
            env=env,
            timeout=timeout,
        )
        tail = dict(line.split("=", 1) for line in result.stdout.splitlines()[-2:] if "=" in line)
        return Boot(
            result.returncode,
            tail.get("hostname", ""),
            int(tail.get("mounts", -1)),
            result.stdout,
            result.stderr,
        )

    def log(self) -> str:
        path = self.rootfs.file("/var/log/metadata-init.log")
        return path.read_text() if path.exists() else ""

    def state(self) -> dict[str, str]:
        path = self.rootfs.file("/var/lib/metadata-init/instance")
        if not path.exists():
            return {}
        return dict(line.split(" ", 1) for line in path.read_text().splitlines())

    def files(self) -> dict[str, str | None]:
        """The files metadata-init may change, for before/after comparisons."""
        names = (
            "/etc/hostname",
            "/etc/hosts",
            "/etc/shadow",
            "/root/.ssh/authorized_keys",
            "/var/lib/metadata-init/instance",
        )
        return {
            name: (self.rootfs.file(name).read_text() if self.rootfs.file(name).exists() else None)
            for name in names
        }

    def shadow_hash(self) -> str:
        for line in self.rootfs.read("/etc/shadow").splitlines():
            if line.startswith("root:"):
                return line.split(":")[1]
        raise AssertionError("no root entry in /etc/shadow")


def install(rootfs: Rootfs) -> None:
    subprocess.run(
        ["sh", str(GUEST_INIT / "install.sh"), "--root", str(rootfs.path), "--init", "rc.local"],
        check=True,
        capture_output=True,
    )


@pytest.fixture
@root_fixture
def make_guest(tmp_path: Path) -> Iterator[Callable[..., Guest]]:
    """make_guest(shell="busybox", binaries=SHELLS[shell]) → a fresh guest rootfs with
    metadata-init installed; `binaries` are host programs copied in besides busybox.

    The rootfs trees (a few MB each) are removed after the test, passed or failed.
    """
    need_root()
    need_tools("unshare", "chroot", "busybox", "ldd")
    counter = itertools.count()
    made: list[Path] = []

    def make(shell: str = "busybox", binaries: Sequence[str] | None = None) -> Guest:
        binaries = SHELLS[shell] if binaries is None else tuple(binaries)
        if shell != "busybox" or binaries:
            need_tools(*([shell] if shell != "busybox" else []), *binaries)
        path = tmp_path / f"rootfs-{shell}-{next(counter)}"
        made.append(path)
        rootfs = build_rootfs(path, shell=shell, binaries=binaries)
        install(rootfs)
        guest = Guest(rootfs)
        guest.set_identity()
        return guest

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def guest_url(service: MetadataService) -> str:
    return service.guest_addresses[0].url


def loopback_guest(**overrides: Any) -> dict[str, Any]:
    """A guest record whose address is 127.0.0.1, so a chrooted script on this host is it."""
    body = guest_body(
        1,
        ipv4={"address": "127.0.0.1", "prefix": 8},
        domain="example.test",
        password_hash=SAMPLE_HASH,
        ssh_keys=[SAMPLE_KEY],
    )
    body.update(overrides)
    return body


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port with nobody listening (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A loopback listener that never accepts: any connection attempt stays in its backlog."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


async def timed_first_boot(service: MetadataService, guest: Guest) -> tuple[float, float]:
    """One full first boot: (script start → `configured` recorded, spawn → same), in seconds.

    The guest is re-armed first (new instance id, secrets served again) and its state file
    removed. The script's start is the moment its wrapper, inside the chroot, writes to a
    FIFO the host is waiting on; "spawn" adds creating the namespaces and the chroot.
    """
    registry = service.registry
    assert registry is not None
    await registry.rearm(MAC)
    guest.rootfs.file("/var/lib/metadata-init/instance").unlink(missing_ok=True)
    fifo = guest.rootfs.file("/run/metadata-init-started")
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)

    def wait_for_start() -> float:
        with open(fifo, "rb") as reader:
            reader.read()
        return time.perf_counter()

    started = asyncio.get_running_loop().run_in_executor(None, wait_for_start)
    spawned = time.perf_counter()
    boot = asyncio.create_task(
        guest.rootfs.run_async(
            ["/bin/sh", "-c", "echo > /run/metadata-init-started && exec metadata-init"]
        )
    )
    vm = await registry.get(MAC)
    while vm.state is not State.CONFIGURED and not boot.done():
        vm = await registry.wait_for_state(MAC, unlike=vm.state, timeout=0.5)
    done = time.perf_counter()
    result = await boot
    if not started.done():  # the wrapper never wrote: let the waiting thread go
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    start = await started
    if result.returncode != 0 or vm.state is not State.CONFIGURED:
        raise AssertionError(f"boot failed ({result.returncode}, {vm.state}): {result.stderr}")
    return done - start, done - spawned


Serve = Callable[[Stub], Awaitable[Stub]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(stub) → the stub (tests/guest_init/stub.py) listening on a loopback port, at
    stub.url; stopped afterwards."""
    runners: list[web.AppRunner] = []

    async def start(stub: Stub) -> Stub:
        app = web.Application()
        app.add_routes(stub.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return stub

    yield start
    for runner in runners:
        await runner.cleanup()
