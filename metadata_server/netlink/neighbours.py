"""Who holds a peer address: this host itself, or which MAC in the neighbour table of
the interface the kernel routes it through.

The neighbour entry is asked of the kernel each time a connection needs it, and
concurrent questions about one address share one lookup only when it started after the
asker's connection did; the route is remembered until any route or address changes. A
watch on the kernel's neighbour events (RTM_NEWNEIGH, RTM_DELNEIGH) counts a generation per
address, so a connection that proved its peer earlier re-checks once that entry changed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass
from socket import AF_INET, AF_INET6
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_NEIGH,
)

from metadata_server.netlink.events import EventWatch
from metadata_server.netlink.neighbour_query import NeighbourQuery
from metadata_server.netlink.wire import NDA_DST, Event

log = logging.getLogger(__name__)

RTN_LOCAL = 2
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
LOOKUP_TIMEOUT = 2.0
MAX_TRACKED_ADDRESSES = 65536
ROUTE_AND_ADDRESS_GROUPS = (
    RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)


@dataclass(frozen=True)
class PeerLink:
    """Where a peer address lives: on this host, or behind `ifindex` with `mac`."""

    local: bool
    ifindex: int | None
    mac: str | None


NOBODY = PeerLink(local=False, ifindex=None, mac=None)


class LookupTimeout(Exception):
    """The kernel did not answer in LOOKUP_TIMEOUT (a host too busy to schedule us): the
    peer is neither proven nor refused, and the question may be asked again."""


class NetlinkNeighbours:
    """Neighbour-table lookups over one rtnetlink socket, and a watch on its changes.

    Which way the kernel routes a peer (this host, or out of which interface) is asked
    once per address and remembered until any route or address on the host changes: a
    route request is the dearest part of a check (pyroute2 builds and parses each one),
    and in a boot storm every new connection asks. The neighbour entry itself is asked
    for every time.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._ipr: Any = None
        self._query: NeighbourQuery | None = None
        self._watch: EventWatch | None = None
        self._route_watch: EventWatch | None = None
        self._clock = clock
        self._counter = itertools.count(1)
        self._floor = 0
        self._generations: dict[str, int] = {}
        self._in_flight: dict[str, tuple[float, asyncio.Future[PeerLink]]] = {}
        # per address family: address -> (local, oif), and a count of its changes
        self._routes: dict[int, dict[str, tuple[bool, int | None]]] = {AF_INET: {}, AF_INET6: {}}
        self._routes_generation: dict[int, int] = {AF_INET: 0, AF_INET6: 0}

    async def start(self) -> None:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        self._query = NeighbourQuery()
        await self._query.start()
        self._watch = EventWatch(
            RTMGRP_NEIGH, "neighbour-watch", self._take, on_gap=self.changed_all
        )
        await self._watch.start()
        self._route_watch = EventWatch(
            ROUTE_AND_ADDRESS_GROUPS,
            "route-watch",
            lambda event: self.forget_routes(event.family),
            on_gap=self.forget_routes,
        )
        await self._route_watch.start()

    async def stop(self) -> None:
        for watch in (self._watch, self._route_watch):
            if watch is not None:
                await watch.stop()
        self._watch = self._route_watch = None
        if self._query is not None:
            await self._query.stop()
            self._query = None
        if self._ipr is not None:
            self._ipr.close()
        self._ipr = None

    def forget_routes(self, family: int | None = None) -> None:
        """Drop the remembered routes of `family` (all without one): a route or an address
        of this host changed. Every new vif brings IPv6 link-local events; IPv4 answers
        outlive those."""
        for known in (AF_INET, AF_INET6) if family not in (AF_INET, AF_INET6) else (family,):
            self._routes[known].clear()
            self._routes_generation[known] += 1

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

    def _take(self, event: Event) -> None:
        destination = event.address(NDA_DST)
        if destination:
            self.changed(destination)

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
            timeout = LookupTimeout(
                f"no neighbour answer about {address} within {LOOKUP_TIMEOUT:g} s"
            )
            future.set_exception(timeout)
            future.exception()  # retrieved: joiners see it, nobody else must
            raise timeout from None
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

    async def _route(self, address: str) -> tuple[bool, int | None] | None:
        """(local, outgoing interface) for `address`; None when there is no route."""
        family = AF_INET6 if ":" in address else AF_INET
        routes_known = self._routes[family]
        known = routes_known.get(address)
        if known is not None:
            return known
        generation = self._routes_generation[family]
        try:
            routes = await self._ipr.route("get", dst=address)
        except NetlinkError as exc:  # no route to the peer: nothing can vouch for it
            log.debug("no route to %s: %s", address, exc)
            return None
        if not routes:
            return None
        route = routes[0]
        answer = (route["type"] == RTN_LOCAL, route.get("oif"))
        if generation == self._routes_generation[family]:  # no change came in meanwhile
            if len(routes_known) >= MAX_TRACKED_ADDRESSES:
                routes_known.clear()
            routes_known[address] = answer
        return answer

    async def _lookup(self, address: str) -> PeerLink:
        if self._ipr is None:
            raise RuntimeError("netlink is not started")
        route = await self._route(address)
        if route is None:
            return NOBODY
        local, ifindex = route
        if local:
            return PeerLink(local=True, ifindex=None, mac=None)
        if ifindex is None:
            return PeerLink(local=False, ifindex=None, mac=None)
        # One entry asked for (RTM_GETNEIGH), not the whole table dumped: a boot storm's
        # table holds every guest, and each new connection asks.
        assert self._query is not None
        reply = await self._query.entry(address, ifindex)
        if reply.error:  # ENOENT: no entry, nobody holds the address now
            log.debug("no neighbour entry for %s: %s", address, os.strerror(reply.error))
            return PeerLink(local=False, ifindex=ifindex, mac=None)
        usable = reply.lladdr and not reply.state & (NUD_INCOMPLETE | NUD_FAILED)
        return PeerLink(local=False, ifindex=ifindex, mac=reply.lladdr if usable else None)
