"""Following a DHCP daemon's lease database: each new lease marks its guest `leased`.

The lease file's directory is watched with inotify (a file that is rewritten, appended
to, or replaced by a rename all show there); after `debounce` seconds of quiet the file
is read (dhcp/leases.py), and every `safety_interval` seconds it is read anyway, in case
an event was missed. A lease is news when it differs from the MAC's lease at the last
read (a new address, or a renewal: the registry decides what a renewal means). A lease
for a MAC no guest has registered, or for a guest at another address than its
reservation, records nothing and is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from metadata_server.dhcp.leases import Lease, LeaseFile

log = logging.getLogger(__name__)
IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)

# MAC → the address reserved for it here (None: no guest here has it)
Reservation = Callable[[str], str | None]
MarkLeased = Callable[[str, str], Awaitable[object]]


class DirectoryWatch:
    """inotify on one directory: `changed` is set when a file named `name` changes."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name.encode()
        self.changed = asyncio.Event()
        self._fd = -1

    def start(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if _libc.inotify_add_watch(fd, str(self.directory).encode(), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"cannot watch {self.directory}: {os.strerror(errno)}")
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, _, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if name == self.name:
                self.changed.set()

    def stop(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class LeaseWatch:
    def __init__(
        self,
        leases: LeaseFile,
        reservation: Reservation,
        mark_leased: MarkLeased,
        *,
        debounce: float = 0.05,
        safety_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.leases = leases
        self._reservation = reservation
        self._mark_leased = mark_leased
        self._debounce = debounce
        self._safety = safety_interval
        self._clock = clock
        self._watch = DirectoryWatch(leases.path.parent, leases.path.name)
        self._task: asyncio.Task[None] | None = None
        self._held: dict[str, Lease] = {}
        self._said: set[tuple[str, str]] = set()
        self.reads = 0
        self.recorded = 0

    async def start(self) -> None:
        self.leases.path.parent.mkdir(parents=True, exist_ok=True)
        self._watch.start()
        await self.read_now()
        self._task = asyncio.create_task(self._follow(), name=f"lease-watch-{self.leases.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._watch.stop()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._safety):
                    await self._watch.changed.wait()
            await asyncio.sleep(self._debounce)
            self._watch.changed.clear()
            await self.read_now()

    async def read_now(self) -> None:
        try:
            held = await asyncio.to_thread(self.leases.read, self._clock())
        except OSError as exc:
            self._say_once("read", str(exc), "cannot read the lease file: %s", exc)
            return
        self.reads += 1
        failed: set[str] = set()
        for mac, lease in held.items():
            if self._held.get(mac) == lease:
                continue  # the same lease as at the last read
            address = lease.address
            reserved = self._reservation(mac)
            if reserved is None:
                self._say_once(mac, address, "lease of %s for %s, no guest here", address, mac)
            elif reserved != address:
                self._say_once(
                    mac,
                    address,
                    "guest %s leased %s, not its %s: not recorded",
                    mac,
                    address,
                    reserved,
                )
            else:
                try:
                    await self._mark_leased(mac, address)  # renewals are no news there
                    self.recorded += 1
                except Exception as exc:  # one guest's failure must not stop the others
                    log.warning("could not record the lease of %s: %s", mac, exc)
                    failed.add(mac)
        self._held = {mac: lease for mac, lease in held.items() if mac not in failed}

    def _say_once(self, key: str, detail: str, message: str, *args: object) -> None:
        if (key, detail) in self._said:
            return
        if len(self._said) > 10000:
            self._said.clear()
        self._said.add((key, detail))
        log.warning(message, *args)
