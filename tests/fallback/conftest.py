"""Fixtures for the ISO fallback: the stand-in xenstored, the real xenstore-utils, the
xl stand-in, and a `world` that wires a Provisioner to them and to a real service;
everything they create (sockets, temp dirs, ISO files, loop devices, processes, running
flows) is removed at the end, also when the test fails."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from metadata_server.app import MetadataService
from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions
from metadata_server.fallback.isodir import IsoDirectory
from metadata_server.fallback.provision import Provisioner, ProvisionSettings
from metadata_server.fallback.xen import VIF_BACKENDS, XenHost, XenSettings
from metadata_server.fallback.xenstored import XenstoredServer
from metadata_server.model import VM, State
from metadata_server.registry import Registry
from tests.support.requirements import need_root, need_tools

T = TypeVar("T")

XENSTORE_TOOLS = (
    "xenstore-read",
    "xenstore-write",
    "xenstore-rm",
    "xenstore-chmod",
    "xenstore-ls",
    "xenstore-list",
    "xenstore-exists",
    "xenstore-watch",
)
GUESTS = (5, 6)
TOOL_TIMEOUT = 10


class ServerThread:
    """The stand-in xenstored on its own event loop in a thread, so a test can run the
    real tools synchronously (or from its own loop) while the server answers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.server = XenstoredServer(directory)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self.server.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TOOL_TIMEOUT)

    def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (for looking at its state without races)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def introduce(self, domid: int) -> Path:
        return self.call(self.server.introduce_domain(domid))

    def release(self, domid: int) -> None:
        self.call(self.server.release_domain(domid))

    def socket(self, domid: int = 0) -> Path:
        return self.server.domain_socket(domid)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.server.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TOOL_TIMEOUT)
        self.loop.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def xenstored(short_tmp: Path) -> Iterator[ServerThread]:
    """A running stand-in xenstored with guests 5 and 6 created."""
    need_tools(*XENSTORE_TOOLS)
    server = ServerThread(short_tmp / "xenstored")
    server.start()
    try:
        for domid in GUESTS:
            server.introduce(domid)
        yield server
    finally:
        server.stop()


def tool(
    server: ServerThread, name: str, *args: str, domid: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run a real xenstore-* tool as domain `domid` (through that domain's socket)."""
    env = {**os.environ, "XENSTORED_PATH": str(server.socket(domid))}
    return subprocess.run(
        [name, *args], capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT
    )


def ok(server: ServerThread, name: str, *args: str, domid: int = 0) -> str:
    result = tool(server, name, *args, domid=domid)
    assert result.returncode == 0, f"{name} {args} as d{domid}: {result.stderr}"
    return result.stdout


class WatchProcess:
    """A real `xenstore-watch` running as some domain; lines are read with a timeout."""

    def __init__(self, server: ServerThread, *paths: str, domid: int = 0) -> None:
        env = {**os.environ, "XENSTORED_PATH": str(server.socket(domid))}
        self.proc = subprocess.Popen(
            ["xenstore-watch", *paths],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._pending = b""

    def line(self, timeout: float = 5.0) -> str | None:
        """The next event's path, or None if none comes within `timeout` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def lines(self, count: int, timeout: float = 5.0) -> list[str | None]:
        return [self.line(timeout) for _ in range(count)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TOOL_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watch(xenstored: ServerThread) -> Iterator[Callable[..., WatchProcess]]:
    started: list[WatchProcess] = []

    def start(*paths: str, domid: int = 0) -> WatchProcess:
        process = WatchProcess(xenstored, *paths, domid=domid)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def xl_state(short_tmp: Path) -> Iterator[Path]:
    """The xl stand-in's state dir; loop devices it left attached are released."""
    state = short_tmp / "xl"
    state.mkdir()
    try:
        yield state
    finally:
        for record in (state / "devices").glob("*/*"):
            device = record.read_text().strip()
            if device.startswith("/dev/loop"):
                subprocess.run(["losetup", "-d", device], capture_output=True, timeout=10)


def xl_standin_command(state: Path, *options: str) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "metadata_server.fallback.xl_standin",
        "--state-dir",
        str(state),
        *options,
        "--",
    )


@pytest.fixture
def loop_devices() -> None:
    need_root()
    need_tools("losetup")


# --- the ISO flow: a registry, the stand-ins, and a Provisioner wired to them ----------


@dataclass
class World:
    """Everything one ISO provisioning test needs, and what it must find gone afterwards."""

    xenstored: ServerThread
    xl_state: Path
    iso_dir: Path
    service: MetadataService
    registry: Registry
    host: XenHost
    provisioner: Provisioner

    def vif(self, domid: int, mac: str, devid: int = 0) -> None:
        ok(self.xenstored, "xenstore-write", f"{VIF_BACKENDS}/{domid}/{devid}/mac", mac)

    def signal_exists(self, domid: int) -> bool:
        path = f"/local/domain/{domid}/data/metadata-init"
        return tool(self.xenstored, "xenstore-exists", path).returncode == 0

    def xl_calls(self) -> list[list[str]]:
        log = self.xl_state / "xl-argv.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    async def attached(self, domid: int = 5, timeout: float = 10) -> str:
        """The loop device of the ISO attached to `domid`, once the flow attached it."""
        record = self.xl_state / "devices" / str(domid) / "xvdd"
        deadline = time.monotonic() + timeout
        while True:
            device = record.read_text().strip() if record.exists() else ""
            if device:  # the stand-in creates the file, then writes it
                return device
            if time.monotonic() > deadline:
                raise AssertionError(f"no ISO was attached to domain {domid} in {timeout} s")
            await asyncio.sleep(0.02)

    async def until(self, mac: str, state: State, timeout: float = 10) -> VM:
        """The record once it reaches `state` (AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        vm = await self.registry.get(mac)
        while vm.state is not state:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{mac} is {vm.state}, not {state}, after {timeout} s")
            vm = await self.registry.wait_for_state(mac, unlike=vm.state, timeout=left)
        return vm

    def loop_devices(self) -> list[str]:
        """Loop devices backed by a file in the ISO directory (deleted or not)."""
        out = subprocess.run(
            ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
        ).stdout
        devices = json.loads(out)["loopdevices"] if out.strip() else []
        return [
            entry["name"]
            for entry in devices
            if (entry.get("back-file") or "").startswith(str(self.iso_dir) + "/")
        ]

    def assert_nothing_left(self, *domids: int) -> None:
        if self.iso_dir.exists():
            assert sorted(os.listdir(self.iso_dir)) == [], "ISO files are left"
        for domid in domids or GUESTS:
            assert not self.signal_exists(domid), f"signal keys of domain {domid} are left"
        assert list((self.xl_state / "devices").glob("*/*")) == []
        assert self.loop_devices() == []
        watchers = subprocess.run(
            ["pgrep", "-f", "xenstore-watch /local/domain/.*/data/metadata-init"],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
        )
        assert watchers.stdout == b"", "a xenstore-watch is left running"


def make_provisioner(
    service: MetadataService,
    xenstored: ServerThread,
    xl_command: tuple[str, ...],
    iso_dir: Path,
    *,
    command_timeout: float = 10,
) -> tuple[XenHost, Provisioner]:
    assert service.registry is not None
    host = XenHost(
        XenSettings(
            xl_command=xl_command,
            xenstored_path=str(xenstored.socket()),
            command_timeout=command_timeout,
        )
    )
    settings = service.settings
    provisioner = Provisioner(
        service.registry,
        host,
        IsoDirectory(iso_dir),
        DocumentOptions(
            default_domain=settings.domain,
            public_url=settings.public_url,
            serve_secrets_once=settings.guest.serve_secrets_once,
        ),
        CloudOptions(),
        ProvisionSettings(default_timeout=10),
    )
    return host, provisioner


@pytest.fixture
async def world(
    xenstored: ServerThread,
    xl_state: Path,
    short_tmp: Path,
    service: MetadataService,
    loop_devices: None,
) -> AsyncIterator[World]:
    """Guest domains 5 and 6 in the stand-in xenstored, the xl stand-in with real loop
    devices, a service with its registry, and a Provisioner whose ISO directory is
    `<short tmp>/iso`. Flows still running at the end are stopped (and clean up)."""
    assert service.registry is not None
    iso_dir = short_tmp / "iso"
    host, provisioner = make_provisioner(service, xenstored, xl_standin_command(xl_state), iso_dir)
    try:
        yield World(xenstored, xl_state, iso_dir, service, service.registry, host, provisioner)
    finally:
        await provisioner.close()
