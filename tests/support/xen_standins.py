"""The Xen stand-ins for tests, as fixtures: the stand-in xenstored on a unix socket
(`xenstored`), the real xenstore-utils pointed at it (`tool`, `ok`, `watch`), the xl
stand-in's state (`xl_state`, `xl_standin_command`) and loop devices (`loop_devices`).
Everything they create is removed at the end, also when the test fails. Test packages
that need them import the fixtures into their conftest."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from metadata_server_testbed.xen.xenstored import XenstoredServer

from tests.support.requirements import need_root, need_tools, root_fixture

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
        "metadata_server_testbed.xen.xl_standin",
        "--state-dir",
        str(state),
        *options,
        "--",
    )


@pytest.fixture
@root_fixture
def loop_devices() -> None:
    need_root()
    need_tools("losetup")


# --- the ISO flow: a registry, the stand-ins, and a Provisioner wired to them ----------
