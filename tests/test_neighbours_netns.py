"""Peer lookups against a real kernel in a namespace: the route is remembered only until a
route or address changes, the neighbour entry is asked for every time.

Two bridges, each with its own subnet; moving a subnet from one to the other must move
the answer with it at once, and an address that becomes this host's own must be `local`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from metadata_server.netlink import NetlinkNeighbours
from tests.support.netns import Netns, in_netns, run, unique
from tests.support.requirements import need_root, need_tools, root_fixture

PEER = "198.18.0.5"
MAC_ON_BR0 = "02:00:00:00:00:0a"
MAC_ON_BR1 = "02:00:00:00:00:0b"


@pytest.fixture
@root_fixture
def ns() -> Iterator[Netns]:
    need_root()
    need_tools("ip")
    name = unique("nb")
    run(["ip", "netns", "add", name])
    try:
        space = Netns(name)
        for bridge in ("br0", "br1"):
            space.run("ip", "link", "add", bridge, "type", "bridge")
            space.run("ip", "link", "set", bridge, "up")
        space.run("ip", "addr", "add", "198.18.0.1/24", "dev", "br0")
        space.run(
            "ip", "neigh", "add", PEER, "lladdr", MAC_ON_BR0, "dev", "br0", "nud", "permanent"
        )
        yield space
    finally:
        run(["ip", "netns", "del", name], check=False)


class CountedRoutes:
    """Counts route requests on the lookup socket (the real call still runs)."""

    def __init__(self, neighbours: NetlinkNeighbours) -> None:
        self.calls = 0
        ipr: Any = neighbours._ipr
        real = ipr.route

        async def route(*argv: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await real(*argv, **kwargs)

        ipr.route = route


async def started(ns: Netns) -> NetlinkNeighbours:
    neighbours = NetlinkNeighbours()
    with in_netns(ns.name):
        await neighbours.start()
    return neighbours


def index_of(ns: Netns, name: str) -> int:
    return int(ns.run("cat", f"/sys/class/net/{name}/ifindex").strip())


async def test_the_route_is_asked_once_and_the_entry_every_time(ns: Netns) -> None:
    neighbours = await started(ns)
    try:
        counted = CountedRoutes(neighbours)
        first = await neighbours.peer_link(PEER, not_before=neighbours.now())
        assert (first.local, first.ifindex, first.mac) == (False, index_of(ns, "br0"), MAC_ON_BR0)
        ns.run("ip", "neigh", "replace", PEER, "lladdr", "02:00:00:00:00:99", "dev", "br0")
        again = await neighbours.peer_link(PEER, not_before=neighbours.now())
        assert again.mac == "02:00:00:00:00:99"  # the entry is fresh each time
        assert counted.calls == 1
        # A new vif's IPv6 link-local address leaves IPv4 answers alone.
        ns.run("ip", "addr", "add", "fe80::1234/64", "dev", "br1")
        await asyncio.sleep(0.2)
        await neighbours.peer_link(PEER, not_before=neighbours.now())
        assert counted.calls == 1
        ns.run("ip", "route", "add", "198.19.0.0/24", "dev", "br1")
        await asyncio.sleep(0.2)
        await neighbours.peer_link(PEER, not_before=neighbours.now())
        assert counted.calls == 2  # any IPv4 route change: asked again
    finally:
        await neighbours.stop()


async def test_a_moved_subnet_moves_the_answer(ns: Netns) -> None:
    neighbours = await started(ns)
    try:
        before = await neighbours.peer_link(PEER, not_before=neighbours.now())
        assert before.mac == MAC_ON_BR0
        ns.run("ip", "addr", "del", "198.18.0.1/24", "dev", "br0")
        ns.run("ip", "addr", "add", "198.18.0.1/24", "dev", "br1")
        ns.run("ip", "neigh", "add", PEER, "lladdr", MAC_ON_BR1, "dev", "br1", "nud", "permanent")
        after = await until_changed(neighbours, before.ifindex)
        assert (after.ifindex, after.mac) == (index_of(ns, "br1"), MAC_ON_BR1)
    finally:
        await neighbours.stop()


async def test_an_address_that_becomes_this_hosts_own_is_local(ns: Netns) -> None:
    neighbours = await started(ns)
    try:
        assert not (await neighbours.peer_link(PEER, not_before=neighbours.now())).local
        ns.run("ip", "addr", "add", f"{PEER}/32", "dev", "br1")
        for _ in range(50):
            if (await neighbours.peer_link(PEER, not_before=neighbours.now())).local:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the lookup still routes a local address out of br0")
    finally:
        await neighbours.stop()


async def until_changed(neighbours: NetlinkNeighbours, ifindex: int | None) -> Any:
    """The answer once it names another interface (route events arrive asynchronously)."""
    answer = None
    for _ in range(50):
        answer = await neighbours.peer_link(PEER, not_before=neighbours.now())
        if answer.ifindex != ifindex:
            return answer
        await asyncio.sleep(0.02)
    return answer
