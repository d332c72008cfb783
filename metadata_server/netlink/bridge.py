"""The bridge as the server and its guard see it: its own addresses, putting the metadata
address on it, and its ports kept current from link events."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_GETLINK,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from metadata_server.netlink.events import EventWatch
from metadata_server.netlink.wire import IFLA_IFNAME, IFLA_MASTER, RTM_DELLINK, RTM_NEWLINK, Event

log = logging.getLogger(__name__)


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
        self._during_dump: list[Event] | None = None
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

    def _take(self, event: Event) -> None:
        """Apply one link event to the member set; signal when the set changed."""
        if event.kind not in (RTM_NEWLINK, RTM_DELLINK):
            return
        if self._during_dump is not None:
            # Sent after the watch was bound and in order: replaying it on the dump is safe.
            self._during_dump.append(event)
            return
        index = event.index
        name = event.text(IFLA_IFNAME)
        if name == self.bridge and (event.kind == RTM_DELLINK or index != self._bridge_index):
            self._lost()  # the bridge itself came or went: look at all again
            return
        if self._dumped_at is None:
            return  # the next dump covers it
        before = self._members.get(index)
        master = event.u32(IFLA_MASTER)
        if event.kind == RTM_NEWLINK and master == self._bridge_index and name:
            self._members[index] = name
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
        for event in arrived:
            self._take(event)

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
