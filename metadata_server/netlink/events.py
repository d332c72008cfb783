"""Kernel event subscriptions (rtnetlink multicast) that survive lost events, on a
socket kept in the network namespace they were started in. Messages are read with
`wire.parse` (the few fields the watches need), only from the kernel itself."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import socket
from collections.abc import Callable

from pyroute2.netlink import NETLINK_ROUTE

from metadata_server.netlink.wire import Event, WireError, parse

log = logging.getLogger(__name__)

THIS_THREADS_NAMESPACE = "/proc/thread-self/ns/net"
DATAGRAM = 1 << 16  # the kernel's multicast messages are far smaller
KERNEL = 0  # the port id the kernel's own messages come from
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # os.setns arrives in Python 3.12; Debian 12 has 3.11.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _rtnetlink_socket_in(namespace: int) -> socket.socket:
    """A NETLINK_ROUTE socket in the network namespace `namespace` (an open fd) names;
    this thread enters it only for the call, and only when it is elsewhere."""
    here = os.open(THIS_THREADS_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        same = os.fstat(here)[1:3] == os.fstat(namespace)[1:3]  # (inode, device)
        if not same:
            _setns(namespace)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        finally:
            if not same:
                _setns(here)
    finally:
        os.close(here)


class EventWatch:
    """One rtnetlink multicast subscription that survives lost events.

    When the kernel's queue for the socket overflows (ENOBUFS) the events still buffered
    cannot be told apart from those sent after the loss, so the socket is replaced by a
    fresh one and `on_gap` runs: everything delivered afterwards was sent after the fresh
    socket was bound, in order and without holes. `start` returns once the first socket
    is bound, so a dump taken after it misses nothing.
    """

    def __init__(
        self,
        groups: int,
        name: str,
        on_message: Callable[[Event], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._groups = groups
        self._name = name
        self._on_message = on_message
        self._on_gap = on_gap
        self._task: asyncio.Task[None] | None = None
        self._namespace: int | None = None
        self.replaced = 0  # sockets replaced after a loss (for tests and logs)

    async def start(self) -> None:
        # A replacement socket must watch the namespace the first one did, whichever
        # namespace this thread is in by then.
        self._namespace = os.open(THIS_THREADS_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
        first = await self._bind()
        self._task = asyncio.create_task(self._run(first), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._namespace is not None:
            os.close(self._namespace)
            self._namespace = None

    async def _bind(self) -> socket.socket:
        assert self._namespace is not None
        sock = _rtnetlink_socket_in(self._namespace)
        try:
            sock.setblocking(False)
            sock.bind((0, self._groups))
        except OSError:
            sock.close()
            raise
        return sock

    async def _run(self, sock: socket.socket) -> None:
        try:
            while True:
                try:
                    await self._read(sock)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if getattr(exc, "errno", None) != errno.ENOBUFS:
                        log.exception(
                            "%s: reading netlink events failed; starting over", self._name
                        )
                        await asyncio.sleep(0.1)
                sock.close()
                sock = await self._bind_again()
                self.replaced += 1
                self._on_gap()
        finally:
            sock.close()

    async def _bind_again(self) -> socket.socket:
        while True:
            try:
                return await self._bind()
            except OSError:
                log.exception("%s: cannot subscribe to netlink events again", self._name)
                await asyncio.sleep(1.0)

    async def _read(self, sock: socket.socket) -> None:
        """Take the socket's datagrams until reading fails (raised here)."""
        await drain_while_readable(sock, self._take)

    def _take(self, datagram: bytes, sender: int) -> None:
        if sender != KERNEL:
            return  # only the kernel speaks for the kernel
        if len(datagram) >= DATAGRAM:
            raise WireError("a datagram filled the buffer: it may have been cut")
        for event in parse(datagram):
            try:
                self._on_message(event)
            except Exception:  # one odd message must not end the watch
                log.exception("%s: could not take a netlink event", self._name)


async def drain_while_readable(sock: socket.socket, take: Callable[[bytes, int], None]) -> None:
    """Hand every datagram of `sock` (non-blocking) to `take(datagram, sender port id)`,
    all that are queued each time the socket turns readable, until reading or `take`
    raises: that is raised here. One reader registered for the socket's life, not one per
    datagram (`sock_recvfrom` registers and unregisters the socket with epoll for each;
    a booting guest brings dozens of link, address, route and neighbour events)."""
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while True:
                try:
                    datagram, (sender, _groups) = sock.recvfrom(DATAGRAM)
                except BlockingIOError:
                    return
                take(datagram, sender)
        except Exception as exc:
            loop.remove_reader(sock.fileno())
            if not failed.done():
                failed.set_exception(exc)

    loop.add_reader(sock.fileno(), readable)
    try:
        await failed
    finally:
        loop.remove_reader(sock.fileno())
