"""One neighbour entry asked of the kernel (RTM_GETNEIGH with NDA_DST), over one
rtnetlink socket kept in the network namespace it was opened in.

Requests are numbered; the answers, read by one reader, go to their askers by number,
so any number of lookups may be in flight at once. Only the kernel's datagrams count.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket

from pyroute2.netlink import NETLINK_ROUTE

from metadata_server.netlink.events import KERNEL, drain_while_readable
from metadata_server.netlink.wire import NeighbourReply, neighbour_replies, neighbour_request

log = logging.getLogger(__name__)


class NeighbourQuery:
    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[NeighbourReply]] = {}
        self._numbers = itertools.count(1)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        try:
            sock.setblocking(False)
            sock.bind((0, 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._reader = asyncio.create_task(self._read(sock), name="neighbour-query")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._fail_all(ConnectionError("the neighbour query socket was closed"))

    async def entry(self, address: str, ifindex: int) -> NeighbourReply:
        """The kernel's entry for `address` on `ifindex` (or the errno it answered)."""
        if self._sock is None:
            raise RuntimeError("the neighbour query is not started")
        number = next(self._numbers) & 0xFFFFFFFF
        answer: asyncio.Future[NeighbourReply] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        try:
            await asyncio.get_running_loop().sock_sendall(
                self._sock, neighbour_request(number, address, ifindex)
            )
            return await answer
        finally:
            self._waiting.pop(number, None)

    def _take(self, datagram: bytes, sender: int) -> None:
        if sender != KERNEL:
            return
        for reply in neighbour_replies(datagram):
            waiter = self._waiting.pop(reply.sequence, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)

    async def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                await drain_while_readable(sock, self._take)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Answers may be lost (ENOBUFS: the socket's queue overflowed): whoever
                # waits now hears it and may ask again; later questions are answered.
                log.warning("neighbour query: %s; the questions in flight fail", exc)
                self._fail_all(exc)
                await asyncio.sleep(0.01)

    def _fail_all(self, exc: BaseException) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: an asker gone meanwhile must not warn
        self._waiting.clear()
