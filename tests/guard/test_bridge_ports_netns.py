"""The bridge's port set, kept from link events, against a real bridge in a namespace.

The guard asks for the ports on every change; the set must follow veths joining, leaving
and being deleted, ignore links elsewhere, and come back whole after the bridge itself is
replaced, without a dump of every link per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from metadata_server.netlink import BridgePorts
from tests.support.netns import Netns, in_netns, ip_batch, run, unique
from tests.support.requirements import need_root, need_tools, root_fixture


@pytest.fixture
@root_fixture
def ns() -> Iterator[Netns]:
    need_root()
    need_tools("ip")
    name = unique("bp")
    run(["ip", "netns", "add", name])
    try:
        space = Netns(name)
        space.run("ip", "link", "add", "br0", "type", "bridge")
        space.run("ip", "link", "set", "br0", "up")
        yield space
    finally:
        run(["ip", "netns", "del", name], check=False)


async def started(ns: Netns) -> BridgePorts:
    ports = BridgePorts("br0")
    with in_netns(ns.name):
        await ports.start()
    return ports


async def until(ports: BridgePorts, expected: list[str]) -> list[str]:
    """The port set once it equals `expected` (or the last seen after 5 s)."""
    seen: list[str] = []
    for _ in range(100):
        seen = await ports.ports()
        if seen == expected:
            return seen
        await asyncio.sleep(0.05)
    return seen


def veth(ns: Netns, name: str, *, on_bridge: bool = True) -> None:
    ns.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    if on_bridge:
        ns.run("ip", "link", "set", name, "master", "br0")


async def test_ports_follow_links_joining_and_leaving(ns: Netns) -> None:
    veth(ns, "vh0")
    ports = await started(ns)
    try:
        assert await ports.ports() == ["vh0"]
        ports.changed.clear()
        veth(ns, "vh1")
        veth(ns, "other", on_bridge=False)
        assert await until(ports, ["vh0", "vh1"]) == ["vh0", "vh1"]
        assert ports.changed.is_set()

        ns.run("ip", "link", "set", "vh0", "nomaster")
        assert await until(ports, ["vh1"]) == ["vh1"]
        ns.run("ip", "link", "del", "vh1")
        assert await until(ports, []) == []
        ns.run("ip", "link", "set", "other", "master", "br0")
        assert await until(ports, ["other"]) == ["other"]
    finally:
        await ports.stop()


async def test_an_unrelated_link_change_does_not_signal(ns: Netns) -> None:
    veth(ns, "vh0")
    ports = await started(ns)
    try:
        await ports.ports()
        veth(ns, "loose", on_bridge=False)
        await asyncio.sleep(0.3)
        ports.changed.clear()
        ns.run("ip", "link", "set", "loose", "mtu", "1400")
        await asyncio.sleep(0.3)
        assert not ports.changed.is_set()
        assert await ports.ports() == ["vh0"]
    finally:
        await ports.stop()


async def test_a_replaced_bridge_is_looked_at_whole(ns: Netns) -> None:
    veth(ns, "vh0")
    ports = await started(ns)
    try:
        assert await ports.ports() == ["vh0"]
        ns.run("ip", "link", "del", "br0")
        ns.run("ip", "link", "add", "br0", "type", "bridge")
        ns.run("ip", "link", "set", "vh0", "master", "br0")
        veth(ns, "vh2")
        assert await until(ports, ["vh0", "vh2"]) == ["vh0", "vh2"]
    finally:
        await ports.stop()


async def test_many_ports_at_once_even_when_events_are_lost(ns: Netns) -> None:
    """600 links appear while the event loop is blocked: more events than the socket's
    buffer holds (ENOBUFS). The watch starts over on a fresh socket and the set is whole."""
    ports = await started(ns)
    try:
        assert await ports.ports() == []
        count = 300
        ip_batch(
            (f"link add vh{i} type veth peer name vh{i}p" for i in range(count)), netns=ns.name
        )
        ip_batch((f"link set vh{i} master br0" for i in range(count)), netns=ns.name)
        expected = sorted(f"vh{i}" for i in range(count))
        assert await until(ports, expected) == expected
        assert ports._watch is not None and ports._watch.replaced >= 1, "no events were lost"
        ns.run("ip", "link", "del", "vh7")
        expected.remove("vh7")
        assert await until(ports, expected) == expected
    finally:
        await ports.stop()
