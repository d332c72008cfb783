"""Real resolvers against the responder: dig and busybox nslookup from a guest namespace.

The responder binds 198.18.0.1:53 in the Dom0 namespace (on the bridge), the guest has
198.18.0.50 behind a veth pair, and a stub upstream listens on the test's own 127.0.0.1.
Every namespace and link is removed by the helpers, also when a test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from metadata_server.dns.service import DnsService
from metadata_server.registry import Registry
from metadata_server.store import Store
from tests.dns.support import UPSTREAM_ADDRESS, ZONE, StubUpstream, dns_settings
from tests.support.netns import Guest, bridge_network, in_netns
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture

pytestmark = pytest.mark.root

SERVER = "198.18.0.1"
GUEST_ADDRESS = "198.18.0.50"


@dataclass
class Lab:
    guest: Guest

    async def run(self, *argv: str, check: bool = True) -> str:
        # In a thread: the responder runs on this test's event loop and must keep answering.
        return await asyncio.to_thread(self.guest.ns.run, *argv, check=check, timeout=20)


@pytest.fixture
@root_fixture
async def lab(store: Store, registry: Registry) -> AsyncIterator[Lab]:
    need_root()
    need_tools("ip", "dig", "busybox")
    await registry.put(mac_of(1), guest_body(1))  # guest1.guests.internal = 198.18.0.11
    with bridge_network(gateway=SERVER, prefix=24) as net:
        guest = net.add_guest(mac_of(50))
        guest.ns.run("ip", "addr", "add", f"{GUEST_ADDRESS}/24", "dev", "eth0")
        # The stub upstream stays in this namespace: the forwarder opens a socket per query,
        # in the namespace of the thread running the loop, which is this one after start.
        stub = StubUpstream("answer")
        await stub.start()
        with in_netns(net.dom0.name):  # the listening sockets are made in Dom0's namespace
            dns = DnsService(
                dns_settings(listen=((SERVER, 53),), upstreams=(stub.endpoint,)), store, ZONE
            )
            await dns.start()
        try:
            yield Lab(guest)
        finally:
            await dns.stop()
            await stub.stop()


DIG = {
    "a": ([f"guest1.{ZONE}", "A"], "198.18.0.11"),
    "a-over-tcp": (["+tcp", f"guest1.{ZONE}", "A"], "198.18.0.11"),
    "a-upper-case": ([f"GUEST1.{ZONE.upper()}", "A"], "198.18.0.11"),
    "ptr": (["-x", "198.18.0.11"], f"guest1.{ZONE}."),
    "metadata": ([f"metadata.{ZONE}"], "169.254.169.254"),
    "soa": ([ZONE, "SOA"], f"metadata.{ZONE}. hostmaster.{ZONE}."),
    "ns": ([ZONE, "NS"], f"metadata.{ZONE}."),
    "forwarded": (["www.example.com"], UPSTREAM_ADDRESS),
}


@pytest.mark.parametrize(("args", "expected"), DIG.values(), ids=DIG.keys())
async def test_dig(lab: Lab, args: list[str], expected: str) -> None:
    out = await lab.run("dig", f"@{SERVER}", "+short", "+time=2", "+tries=1", *args)
    assert expected in out


async def test_dig_negative_answers(lab: Lab) -> None:
    out = await lab.run("dig", f"@{SERVER}", "+time=2", "+tries=1", f"nobody.{ZONE}")
    assert "status: NXDOMAIN" in out
    assert "AUTHORITY: 1" in out
    assert "IN\tSOA" in out
    out = await lab.run("dig", f"@{SERVER}", "+time=2", "+tries=1", f"guest1.{ZONE}", "AAAA")
    assert "status: NOERROR" in out
    assert "ANSWER: 0, AUTHORITY: 1" in out


async def test_dig_retries_over_tcp_when_truncated(lab: Lab) -> None:
    out = await lab.run(
        "dig", f"@{SERVER}", "+noedns", "+time=2", "+tries=1", "big.example.com", "TXT"
    )
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 10," in out


async def test_busybox_nslookup(lab: Lab) -> None:
    out = await lab.run("busybox", "nslookup", f"guest1.{ZONE}", SERVER)
    assert "198.18.0.11" in out
    out = await lab.run("busybox", "nslookup", "198.18.0.11", SERVER)
    assert f"guest1.{ZONE}" in out
    out = await lab.run("busybox", "nslookup", f"nobody.{ZONE}", SERVER, check=False)
    assert "NXDOMAIN" in out
