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
import errno
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK, RTMGRP_NEIGH

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


class NetlinkNeighbours:
    """Neighbour-table lookups over one rtnetlink socket, and a watch on its changes."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._ipr: Any = None
        self._watch_ipr: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._clock = clock
        self._counter = itertools.count(1)
        self._floor = 0
        self._generations: dict[str, int] = {}
        self._in_flight: dict[str, tuple[float, asyncio.Future[PeerLink]]] = {}

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._watch_ipr = AsyncIPRoute()
        await self._watch_ipr.bind(groups=RTMGRP_NEIGH)
        self._watch = asyncio.create_task(self._follow_changes(), name="neighbour-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for ipr in (self._watch_ipr, self._ipr):
            if ipr is not None:
                ipr.close()
        self._ipr = self._watch_ipr = None

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

    async def _follow_changes(self) -> None:
        assert self._watch_ipr is not None
        while True:
            try:
                async for message in self._watch_ipr.get():
                    destination = message.get("dst")
                    if destination:
                        self.changed(str(destination))
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    log.exception("reading neighbour events failed; going on")
                    await asyncio.sleep(0.1)
                # Events were lost (the kernel's queue overflowed): every proof is void.
                self.changed_all()
            except Exception:  # the watch must not die with one bad message
                log.exception("reading neighbour events failed; going on")
                await asyncio.sleep(0.1)

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
    """The ports of one bridge, and a signal whenever any link changes (a guest's vif
    comes or goes), so the bridge guard can look again at once."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self._ipr: Any = None
        self._watch_ipr: Any = None
        self._watch: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._watch_ipr = AsyncIPRoute()
        await self._watch_ipr.bind(groups=RTMGRP_LINK)
        self._watch = asyncio.create_task(self._follow(), name="bridge-port-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        for ipr in (self._watch_ipr, self._ipr):
            if ipr is not None:
                ipr.close()
        self._ipr = self._watch_ipr = None

    async def _follow(self) -> None:
        assert self._watch_ipr is not None
        while True:
            try:
                async for _ in self._watch_ipr.get():
                    self.changed.set()
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                # ENOBUFS: events were lost (many links at once); looking again covers them.
                self.changed.set()
                if exc.errno != errno.ENOBUFS:
                    log.exception("reading link events failed; going on")
                    await asyncio.sleep(0.1)
            except Exception:
                log.exception("reading link events failed; going on")
                await asyncio.sleep(0.1)

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
        index = await _ifindex(self._ipr, self.bridge)
        names: list[str] = []
        async for link in await self._ipr.link("dump"):
            if link.get("master") == index and link.get("ifname"):
                names.append(str(link.get("ifname")))
        return sorted(names)
