"""The kernel's view of who is on the wire: the only module that imports pyroute2.

Guest identity checks ask two things about a peer address: is it one of this host's own
addresses (then it came over loopback), and which MAC holds it in the neighbour table of
the interface the kernel routes it through. Nothing is cached across time: each answer is
asked of the kernel when a connection needs it, and concurrent questions about one address
share one lookup only when it started after the asker's connection did. A watch on the
kernel's neighbour events (RTM_NEWNEIGH, RTM_DELNEIGH) counts a generation per address,
so a connection that proved its peer earlier re-checks once that entry has changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NETLINK_ROUTE, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETLINK, RTMGRP_LINK, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

log = logging.getLogger(__name__)

RTN_LOCAL = 2
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
LOOKUP_TIMEOUT = 2.0
MAX_TRACKED_ADDRESSES = 65536


@dataclass(frozen=True)
class PeerLink:
    """Where a peer address lives: on this host, or behind `ifindex` with `mac`."""

    local: bool
    ifindex: int | None
    mac: str | None


NOBODY = PeerLink(local=False, ifindex=None, mac=None)


THIS_THREADS_NAMESPACE = "/proc/thread-self/ns/net"
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
        on_message: Callable[[Any], None],
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

    async def _bind(self) -> Any:
        assert self._namespace is not None
        ipr = AsyncIPRoute(fileno=_rtnetlink_socket_in(self._namespace).detach())
        await ipr.bind(groups=self._groups)
        return ipr

    async def _run(self, ipr: Any) -> None:
        try:
            while True:
                try:
                    await self._read(ipr)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if getattr(exc, "errno", None) != errno.ENOBUFS:
                        log.exception(
                            "%s: reading netlink events failed; starting over", self._name
                        )
                        await asyncio.sleep(0.1)
                ipr.close()
                ipr = None
                while ipr is None:
                    try:
                        ipr = await self._bind()
                    except OSError:
                        log.exception("%s: cannot subscribe to netlink events again", self._name)
                        await asyncio.sleep(1.0)
                self.replaced += 1
                self._on_gap()
        finally:
            if ipr is not None:
                ipr.close()

    async def _read(self, ipr: Any) -> None:
        while True:
            async for message in ipr.get():
                try:
                    self._on_message(message)
                except Exception:  # one odd message must not end the watch
                    log.exception("%s: could not take a netlink event", self._name)


class NetlinkNeighbours:
    """Neighbour-table lookups over one rtnetlink socket, and a watch on its changes."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._ipr: Any = None
        self._watch: EventWatch | None = None
        self._clock = clock
        self._counter = itertools.count(1)
        self._floor = 0
        self._generations: dict[str, int] = {}
        self._in_flight: dict[str, tuple[float, asyncio.Future[PeerLink]]] = {}

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._watch = EventWatch(
            RTMGRP_NEIGH, "neighbour-watch", self._take, on_gap=self.changed_all
        )
        await self._watch.start()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self._ipr is not None:
            self._ipr.close()
        self._ipr = None

    def generation(self, address: str) -> int:
        """A number that changes whenever the kernel reports a change of `address`'s
        neighbour entry: an answer taken at one generation holds only while it lasts."""
        return self._generations.get(address, self._floor)

    def changed(self, address: str) -> None:
        if len(self._generations) >= MAX_TRACKED_ADDRESSES:
            # Forget the counts, but move every address to a number never handed out,
            # so no earlier answer can match again.
            self._generations.clear()
            self._floor = next(self._counter)
        self._generations[address] = next(self._counter)

    def _take(self, message: Any) -> None:
        destination = message.get("dst")
        if destination:
            self.changed(str(destination))

    def changed_all(self) -> None:
        """Count a change of every address: no answer taken before now counts."""
        self._generations.clear()
        self._floor = next(self._counter)

    async def peer_link(self, address: str, *, not_before: float) -> PeerLink:
        """Where `address` is now, from a lookup that started at or after `not_before`
        (a connection's opening time on this class's clock): an answer the kernel gave
        before the connection existed never vouches for it."""
        pending = self._in_flight.get(address)
        if pending is not None and pending[0] >= not_before:
            return await asyncio.shield(pending[1])
        started = self._clock()
        future: asyncio.Future[PeerLink] = asyncio.get_running_loop().create_future()
        self._in_flight[address] = (started, future)
        try:
            link = await asyncio.wait_for(self._lookup(address), LOOKUP_TIMEOUT)
        except TimeoutError:
            # The kernel did not answer: nothing vouches for the peer (refused).
            log.error("netlink did not answer about %s in %s s", address, LOOKUP_TIMEOUT)
            link = NOBODY
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joiners see it, nobody else must
            raise
        finally:
            if self._in_flight.get(address, (None, None))[1] is future:
                del self._in_flight[address]
        future.set_result(link)
        return link

    def now(self) -> float:
        """The clock `peer_link`'s `not_before` is read on."""
        return float(self._clock())

    async def _lookup(self, address: str) -> PeerLink:
        if self._ipr is None:
            raise RuntimeError("netlink is not started")
        try:
            routes = await self._ipr.route("get", dst=address)
        except NetlinkError as exc:  # no route to the peer: nothing can vouch for it
            log.debug("no route to %s: %s", address, exc)
            return NOBODY
        route = routes[0] if routes else None
        if route is None:
            return NOBODY
        if route["type"] == RTN_LOCAL:
            return PeerLink(local=True, ifindex=None, mac=None)
        ifindex = route.get("oif")
        mac: str | None = None
        # One entry asked for (RTM_GETNEIGH), not the whole table dumped: a boot storm's
        # table holds every guest, and each new connection asks.
        try:
            entries = await self._ipr.neigh("get", dst=address, ifindex=ifindex)
        except NetlinkError as exc:  # no entry: nobody holds the address now
            log.debug("no neighbour entry for %s: %s", address, exc)
            entries = []
        if hasattr(entries, "__aiter__"):
            entries = [entry async for entry in entries]
        for entry in entries:
            if entry.get("dst") != address or entry["state"] & (NUD_INCOMPLETE | NUD_FAILED):
                continue
            mac = entry.get("lladdr")
        return PeerLink(local=False, ifindex=ifindex, mac=mac.lower() if mac else None)


class BridgeAddressError(Exception):
    """The bridge is missing, or the address cannot be put on it."""


async def _ifindex(ipr: Any, ifname: str) -> int:
    links = await ipr.link_lookup(ifname=ifname)
    if not links:
        raise BridgeAddressError(f"there is no interface named {ifname}")
    return int(links[0])


async def ensure_address(ifname: str, address: str, prefixlen: int) -> bool:
    """Put `address/prefixlen` on `ifname` unless it is there; True when this call added it."""
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        index = await _ifindex(ipr, ifname)
        async for entry in await ipr.addr("dump", index=index, family=2):
            if entry.get("address") == address and entry["prefixlen"] == prefixlen:
                return False
        try:
            await ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            raise BridgeAddressError(
                f"cannot add {address}/{prefixlen} to {ifname}: {exc}"
            ) from None
        return True
    finally:
        ipr.close()


async def remove_address(ifname: str, address: str, prefixlen: int) -> None:
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        index = await _ifindex(ipr, ifname)
        try:
            await ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        except NetlinkError as exc:
            log.warning("could not remove %s/%s from %s: %s", address, prefixlen, ifname, exc)
    finally:
        ipr.close()


class BridgePorts:
    """The ports of one bridge, kept from the kernel's link events, and a signal whenever
    that set changes (a guest's vif comes or goes), so the bridge guard can look again.

    One dump of the bridge's members (filtered by the kernel) at the first look; after
    that each RTM_NEWLINK/RTM_DELLINK updates the set, so a boot storm's hundreds of link
    events cost one small message each, not a dump of every link on the host each. Lost
    events, the bridge itself changing, or RESYNC seconds bring a fresh dump.
    """

    RESYNC = 60.0

    def __init__(self, bridge: str, clock: Any = time.monotonic) -> None:
        self.bridge = bridge
        self._clock = clock
        self._ipr: Any = None
        self._watch: EventWatch | None = None
        self._bridge_index: int | None = None
        self._members: dict[int, str] = {}
        self._dumped_at: float | None = None
        self._during_dump: list[Any] | None = None
        self._losses = 0
        self.changed = asyncio.Event()

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._watch = EventWatch(RTMGRP_LINK, "bridge-port-watch", self._take, self._lost)
        await self._watch.start()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
            self._watch = None
        if self._ipr is not None:
            self._ipr.close()
        self._ipr = None
        self._dumped_at = None

    def _lost(self) -> None:
        self._losses += 1
        self._dumped_at = None
        self.changed.set()

    def _take(self, message: Any) -> None:
        """Apply one link event to the member set; signal when the set changed."""
        event = message["event"]  # not .get(): that would read an IFLA_EVENT attribute
        if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
            return
        if self._during_dump is not None:
            # Sent after the watch was bound and in order: replaying it on the dump is safe.
            self._during_dump.append(message)
            return
        index = message["index"]
        name = message.get("ifname")
        if name == self.bridge and (event == "RTM_DELLINK" or index != self._bridge_index):
            self._lost()  # the bridge itself came or went: look at all again
            return
        if self._dumped_at is None:
            return  # the next dump covers it
        before = self._members.get(index)
        if event == "RTM_NEWLINK" and message.get("master") == self._bridge_index and name:
            self._members[index] = str(name)
        else:
            self._members.pop(index, None)
        if self._members.get(index) != before:
            self.changed.set()

    async def _dump(self) -> None:
        losses = self._losses
        self._during_dump = []
        try:
            index = await _ifindex(self._ipr, self.bridge)
            request = ifinfmsg()
            request["family"] = 0
            request["attrs"] = [("IFLA_MASTER", index)]  # the kernel sends only members
            answer = await self._ipr.nlm_request(
                request, msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST | NLM_F_DUMP
            )
            members: dict[int, str] = {}
            async for link in answer:
                if link.get("master") == index and link.get("ifname"):
                    members[int(link["index"])] = str(link.get("ifname"))
        finally:
            arrived, self._during_dump = self._during_dump, None
        self._bridge_index, self._members = index, members
        if self._losses != losses:
            return  # events were lost meanwhile: this answer counts only until the next look
        self._dumped_at = self._clock()
        for message in arrived:
            self._take(message)

    async def addresses(self) -> list[str]:
        """The bridge's own IPv4 addresses (Dom0's on it)."""
        if self._ipr is None:
            raise RuntimeError("netlink is not started")
        index = await _ifindex(self._ipr, self.bridge)
        found: list[str] = []
        async for entry in await self._ipr.addr("dump", index=index, family=2):
            address = entry.get("address")
            if address:
                found.append(str(address))
        return found

    async def ports(self) -> list[str]:
        """Names of the links enslaved to the bridge; BridgeAddressError without it."""
        if self._ipr is None:
            raise RuntimeError("netlink is not started")
        if self._dumped_at is None or self._clock() - self._dumped_at > self.RESYNC:
            await self._dump()
        return sorted(self._members.values())
