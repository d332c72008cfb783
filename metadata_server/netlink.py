"""The kernel's view of who is on the wire: the only module that imports pyroute2.

Guest identity checks ask two things about a peer address: is it one of this host's own
addresses (then it came over loopback), and which MAC holds it in the neighbour table of
the interface the kernel routes it through. Answers are cached briefly, because a boot
storm asks the same questions many times a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

RTN_LOCAL = 2
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
LOOKUP_TIMEOUT = 2.0
CACHE_SECONDS = 1.0  # a crawl of ~30 requests in a burst costs one lookup


@dataclass(frozen=True)
class PeerLink:
    """Where a peer address lives: on this host, or behind `ifindex` with `mac`."""

    local: bool
    ifindex: int | None
    mac: str | None


class NetlinkNeighbours:
    """Neighbour-table lookups over one rtnetlink socket, cached for CACHE_SECONDS."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, PeerLink]] = {}
        self._cache_seconds = cache_seconds

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()

    async def stop(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def cached(self, address: str) -> PeerLink | None:
        """The answer from the cache when it is fresh; no await on the hot path."""
        entry = self._cache.get(address)
        if entry is not None and time.monotonic() - entry[0] < self._cache_seconds:
            return entry[1]
        return None

    async def peer_link(self, address: str) -> PeerLink:
        link = self.cached(address)
        if link is not None:
            return link
        async with self._lock:
            # Requests that queued behind the lock find the answer the first one stored.
            link = self.cached(address)
            if link is None:
                try:
                    link = await asyncio.wait_for(self._lookup(address), LOOKUP_TIMEOUT)
                except TimeoutError:
                    # The kernel did not answer: nothing vouches for the peer (refused).
                    log.error("netlink did not answer about %s in %s s", address, LOOKUP_TIMEOUT)
                    return PeerLink(local=False, ifindex=None, mac=None)
                if len(self._cache) > 65536:
                    self._cache.clear()
                self._cache[address] = (time.monotonic(), link)
        return link

    async def _lookup(self, address: str) -> PeerLink:
        if self._ipr is None:
            raise RuntimeError("netlink is not started")
        try:
            routes = await self._ipr.route("get", dst=address)
        except NetlinkError as exc:  # no route to the peer: nothing can vouch for it
            log.debug("no route to %s: %s", address, exc)
            return PeerLink(local=False, ifindex=None, mac=None)
        route = routes[0] if routes else None
        if route is None:
            return PeerLink(local=False, ifindex=None, mac=None)
        if route["type"] == RTN_LOCAL:
            return PeerLink(local=True, ifindex=None, mac=None)
        ifindex = route.get("oif")
        mac: str | None = None
        async for entry in await self._ipr.neigh("dump", dst=address):
            if entry.get("dst") != address or entry["ifindex"] != ifindex:
                continue
            if entry["state"] & (NUD_INCOMPLETE | NUD_FAILED):
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
