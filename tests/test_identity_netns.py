"""Guest identity against the kernel's neighbour table, with real guests in namespaces.

A Dom0 namespace holds the bridge and the server (on 169.254.169.254); each guest is a
namespace on a veth with its own MAC and talks to the server with curl. Whoever holds an
address must also be the MAC the record names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.netlink import CACHE_SECONDS
from tests.conftest import guest_body, make_settings, start_in_netns
from tests.support.netns import BridgeNetwork, Guest, bridge_network
from tests.support.requirements import need_root, need_tools

OWNER_MAC = "02:00:c6:12:00:0b"
SPOOF_MAC = "02:00:c6:12:00:66"


@pytest.fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "curl")
    with bridge_network() as network:
        network.add_metadata_address()
        yield network


def join(net: BridgeNetwork, mac: str, address: str) -> Guest:
    return net.add_guest(mac, address)


def curl(guest: Guest, path: str) -> tuple[int, dict[str, object]]:
    out = guest.ns.run(
        "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", f"http://169.254.169.254{path}"
    )
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body) if body else {}


async def start_in(net: BridgeNetwork, tmp_path: Path, verify: str) -> MetadataService:
    settings = make_settings(
        tmp_path / verify,
        **{"guest.listen": ["169.254.169.254:80"], "guest.verify_neighbour": verify},
    )
    service = await start_in_netns(settings, net.dom0.name)
    assert service.registry is not None
    await service.registry.put(
        OWNER_MAC, guest_body(1, ipv4={"address": "198.18.0.11", "prefix": 24})
    )
    return service


@pytest.mark.parametrize("verify", ["auto", "always"])
async def test_owner_is_served_and_a_spoofer_is_refused(
    net: BridgeNetwork, tmp_path: Path, verify: str
) -> None:
    service = await start_in(net, tmp_path, verify)
    try:
        owner = join(net, OWNER_MAC, "198.18.0.11")
        status, doc = await asyncio.to_thread(curl, owner, "/v1/config")
        assert status == 200 and doc["hostname"] == "guest1"
        net.dom0.run("ip", "link", "set", "dev", owner_link(net), "down")
        owner.ns.run("ip", "link", "set", "eth0", "down")
        net.dom0.run("ip", "neigh", "flush", "dev", "br0")
        await asyncio.sleep(CACHE_SECONDS)  # let the server's brief neighbour cache expire

        spoofer = join(net, SPOOF_MAC, "198.18.0.11")
        status, body = await asyncio.to_thread(curl, spoofer, "/v1/config")
        assert status == 403 and OWNER_MAC not in json.dumps(body)

        stranger = join(net, "02:00:c6:12:00:77", "198.18.0.99")
        status, body = await asyncio.to_thread(curl, stranger, "/v1/config")
        assert status == 404 and OWNER_MAC not in json.dumps(body)
    finally:
        await service.stop()


async def test_never_trusts_the_address_alone(net: BridgeNetwork, tmp_path: Path) -> None:
    service = await start_in(net, tmp_path, "never")
    try:
        spoofer = join(net, SPOOF_MAC, "198.18.0.11")
        status, _ = await asyncio.to_thread(curl, spoofer, "/v1/config")
        assert status == 200
    finally:
        await service.stop()


def owner_link(net: BridgeNetwork) -> str:
    links = json.loads(net.dom0.run("ip", "-j", "link", "show", "master", "br0"))
    return str(links[0]["ifname"])
