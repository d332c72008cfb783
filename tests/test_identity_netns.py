"""Guest identity against the kernel's neighbour table, with real guests in namespaces.

A Dom0 namespace holds the bridge and the server (on 169.254.169.254); each guest is a
namespace on a veth with its own MAC and talks to the server with curl. Whoever holds an
address must also be the MAC the record names, checked for each new connection and again
on an old one once the kernel reports that the address's neighbour entry changed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metadata_server.app import MetadataService
from tests.support.netns import BridgeNetwork, Guest, bridge_network
from tests.support.records import guest_body
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.service import make_settings, start_in_netns

OWNER_MAC = "02:00:c6:12:00:0b"
SPOOF_MAC = "02:00:c6:12:00:66"


@pytest.fixture
@root_fixture
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


def poison(net: BridgeNetwork, attacker: Guest, address: str, deadline: float = 8.0) -> float:
    """The attacker takes `address` and sends gratuitous ARP until Dom0's neighbour table
    maps it to the attacker's MAC; returns when it does (seconds taken)."""
    attacker.ns.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        arpings = [
            attacker.ns.popen(
                "arping", "-q", "-c", "1", mode, "-I", "eth0", "-s", address, address,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for mode in ("-U", "-A")
        ]  # fmt: skip
        time.sleep(0.05)
        held = attacker.mac in net.dom0.run("ip", "neigh", "show", address, "dev", "br0").lower()
        for arping in arpings:
            arping.kill()
            arping.wait()
        if held:
            return time.monotonic() - started
    raise AssertionError(f"Dom0 never took {attacker.mac} for {address}")


async def test_an_address_thief_right_after_the_owner_is_refused(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    """The owner reads its document; at once a co-tenant takes its address, poisons
    Dom0's ARP entry and asks on a new connection: it is refused (no answer about the
    owner's address outlives the connection that asked for it)."""
    need_tools("arping")
    service = await start_in(net, tmp_path, "always")
    try:
        owner = join(net, OWNER_MAC, "198.18.0.11")
        attacker = join(net, SPOOF_MAC, "198.18.0.12")
        status, _ = await asyncio.to_thread(curl, owner, "/v1/config")
        asked = time.monotonic()
        await asyncio.to_thread(poison, net, attacker, "198.18.0.11")
        out = await asyncio.to_thread(
            attacker.ns.run,
            "curl",
            "-s",
            "--max-time",
            "5",
            "--interface",
            "198.18.0.11",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://169.254.169.254/v1/config.txt",
        )
        print(f"the thief asked {time.monotonic() - asked:.2f} s after the owner")
        assert status == 200 and out == "403"
    finally:
        await service.stop()


def keep_alive_get(sock: socket.socket, path: str) -> int:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    status = int(head.split(b" ", 2)[1])
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += sock.recv(65536)
    return status


async def test_a_neighbour_change_voids_an_open_connections_proof(
    net: BridgeNetwork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A keep-alive connection proved its peer once; when the kernel reports another MAC
    for that address (RTM_NEWNEIGH), its next request is checked again and refused. (The
    refusal goes to the MAC Dom0 now believes in, so the client hears nothing: the
    server's log says what it decided.)"""
    service = await start_in(net, tmp_path, "always")
    try:
        owner = join(net, OWNER_MAC, "198.18.0.11")
        script = (
            "import socket,sys,time\n"
            "from tests.test_identity_netns import keep_alive_get\n"
            "s=socket.create_connection(('169.254.169.254',80),timeout=3)\n"
            "print(keep_alive_get(s,'/v1/config.txt'),flush=True)\n"
            "sys.stdin.readline()\n"
            "try:\n print(keep_alive_get(s,'/v1/config.txt'),flush=True)\n"
            "except OSError:\n print('no answer',flush=True)\n"
        )
        client = owner.ns.popen(
            sys.executable,
            "-c",
            script,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(Path(__file__).parent.parent),
        )
        assert client.stdout is not None and client.stdin is not None
        first = await asyncio.to_thread(client.stdout.readline)
        net.dom0.run(
            "ip",
            "neigh",
            "replace",
            "198.18.0.11",
            "lladdr",
            SPOOF_MAC,
            "dev",
            "br0",
            "nud",
            "permanent",
        )
        await asyncio.sleep(0.2)  # the event reaches the server's watch
        client.stdin.write(b"\n")
        client.stdin.flush()
        second = await asyncio.to_thread(client.stdout.readline)
        client.wait(timeout=10)
        client.stdin.close()
        client.stdout.close()
        assert (first.strip(), second.strip()) == (b"200", b"no answer")
        assert "refused 198.18.0.11" in caplog.text
    finally:
        await service.stop()


class StalledKernel:
    """Stands in for a kernel (or a host) too busy to answer a route question: while
    `stalled`, the service's real netlink socket's route requests wait forever."""

    def __init__(self, service: MetadataService) -> None:
        netlink = service._netlink
        assert netlink is not None
        self.ipr: Any = netlink._ipr
        self.real = self.ipr.route
        self.stalled = True
        netlink.forget_routes()

        async def route(*argv: Any, **kwargs: Any) -> Any:
            while self.stalled:
                await asyncio.sleep(0.05)
            return await self.real(*argv, **kwargs)

        self.ipr.route = route


def curl_headers(guest: Guest, path: str) -> tuple[int, str]:
    out = guest.ns.run(
        "curl", "-s", "-D", "-", "-o", "/dev/null", "--max-time", "8",
        "-w", "%{http_code}", f"http://169.254.169.254{path}",
    )  # fmt: skip
    headers, _, code = out.rpartition("\n")
    return int(code), headers


async def test_an_unanswered_lookup_asks_the_guest_to_try_again(
    net: BridgeNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer from the kernel in time proves nothing and refuses nothing: 503 with
    Retry-After, and the same guest is served once the kernel answers."""
    monkeypatch.setattr("metadata_server.netlink.neighbours.LOOKUP_TIMEOUT", 0.5)
    service = await start_in(net, tmp_path, "always")
    try:
        owner = join(net, OWNER_MAC, "198.18.0.11")
        kernel = StalledKernel(service)
        status, headers = await asyncio.to_thread(curl_headers, owner, "/v1/config")
        assert status == 503
        assert "retry-after: 1" in headers.lower()
        kernel.stalled = False
        status, doc = await asyncio.to_thread(curl, owner, "/v1/config")
        assert status == 200 and doc["hostname"] == "guest1"
    finally:
        await service.stop()
