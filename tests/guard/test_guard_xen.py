"""The bridge guard on a Xen Dom0's vifs, against the xenstored stand-in (the lab runs the
same on real Xen): each `vif<domid>.<devid>` port carries only the MAC its backend in
xenstore names; a vif whose backend is not known yet sends nothing until it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import BridgeNetwork, Netns, bridge_network, in_netns, run, unique
from tests.support.records import guest_body
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.service import make_settings, start_in_netns
from tests.support.xen_standins import ServerThread, ok

A = ("00:16:3e:00:05:01", "198.18.0.61")
B = ("00:16:3e:00:05:02", "198.18.0.62")
C = ("00:16:3e:00:06:01", "198.18.0.63")
BACKEND = "/local/domain/0/backend/vif"


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "nft", "busybox")
    with bridge_network() as network:
        yield network


def vif(net: BridgeNetwork, port: str, mac: str, address: str) -> Netns:
    """A guest namespace whose Dom0 end is the bridge port `port` (as Xen names it)."""
    guest = Netns(unique("g"))
    run(["ip", "netns", "add", guest.name])
    net._cleanup.append(["ip", "netns", "delete", guest.name])
    run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", guest.name])
    run(["ip", "link", "set", port, "netns", net.dom0.name])
    net.dom0.run("ip", "link", "set", port, "master", "br0", "up")
    guest.run("ip", "link", "set", "eth0", "address", mac)
    guest.run("ip", "link", "set", "eth0", "up")
    guest.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    return guest


def pings(guest: Netns, attempts: int = 1) -> bool:
    """Whether the guest reaches the gateway (ARP, then ICMP) within `attempts` tries."""
    for _ in range(attempts):
        result = subprocess.run(
            guest.argv("busybox", "ping", "-c", "1", "-W", "1", "198.18.0.1"),
            capture_output=True,
            timeout=10,
            check=False,
        )
        if result.returncode == 0:
            return True
    return False


async def test_vifs_carry_only_their_backends_mac(
    net: BridgeNetwork, tmp_path: Path, xenstored: ServerThread
) -> None:
    ok(xenstored, "xenstore-write", f"{BACKEND}/5/0/mac", A[0])
    settings = make_settings(
        tmp_path,
        **{
            "bridge": "br0",
            "guest.listen": ["169.254.169.254:0"],
            "admin.listen": f"unix:{tmp_path}/admin.sock",
            "guard.nft_command": net.dom0.argv("nft"),
            "iso.xenstored_path": str(xenstored.socket()),
        },
    )
    first = vif(net, "vif5.0", *A)
    third = vif(net, "vif6.0", *C)
    service = await start_in_netns(settings, net.dom0.name)
    try:
        assert service.registry is not None and service.guard is not None
        for n, (mac, address) in enumerate((A, B, C), start=1):
            body = guest_body(n, ipv4={"address": address, "prefix": 24, "gateway": "198.18.0.1"})
            await service.registry.put(mac, body)
        await service.guard.sync()
        ports = service.guard.status.ports
        assert ports == {"vif5.0": A[0], "vif6.0": None}
        assert await asyncio.to_thread(pings, first), "its own MAC on its own vif"
        assert not await asyncio.to_thread(pings, third), "no backend known: nothing passes"

        first.run("ip", "link", "set", "eth0", "down")
        first.run("ip", "link", "set", "eth0", "address", B[0])
        first.run("ip", "addr", "flush", "dev", "eth0")
        first.run("ip", "addr", "add", f"{B[1]}/24", "dev", "eth0")
        first.run("ip", "link", "set", "eth0", "up")
        assert not await asyncio.to_thread(pings, first), "another guest's MAC on this vif"
        await service.guard.read_counters()
        assert sum(service.guard.status.drops.get("vif5.0", {}).values()) > 0

        ok(xenstored, "xenstore-write", f"{BACKEND}/6/0/mac", C[0])
        await service.guard.sync()
        assert service.guard.status.ports["vif6.0"] == C[0]
        # Its neighbour entry for the gateway failed while it was dropped: a retry or two.
        assert await asyncio.to_thread(pings, third, 5), "bound now"
    finally:
        with in_netns(net.dom0.name):
            await service.stop()
    listing = json.loads(net.dom0.run("nft", "-j", "list", "tables", "bridge"))
    assert [item for item in listing["nftables"] if "table" in item] == []
