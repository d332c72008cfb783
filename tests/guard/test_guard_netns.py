"""The bridge guard against a hostile co-tenant, in namespaces: each attack works with
`guard.enabled = false` and fails with the guard on, shown by the victim's real guest
script (it configures from the real server, never from the attacker's document) and by
the guard's drop counters. Normal boots (udhcpc and the server's dnsmasq) and traffic
between guests at their own addresses still pass.

Dom0 is `metadata-server serve` in its own namespace with dnsmasq on bridge br0; every
guest is a namespace on a veth port of br0 (ports `vh*`, named in `guard.guest_ports`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metadata_server.documents import DocumentOptions, render_guest_document
from metadata_server.model import VM, State, parse_vm
from tests.guest_init.conftest import Guest
from tests.support.dom0 import admin_call, dom0_config, wait_for_dhcp
from tests.support.netns import BridgeNetwork, bridge_network
from tests.support.netns import Guest as Port
from tests.support.records import guest_body
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.server_process import ServerProcess, server_process
from tests.support.service import ADMIN_TOKEN

TEMPLATES = Path(__file__).resolve().parents[2] / "dhcp_templates"
VICTIM = ("02:00:c6:12:02:0a", "198.18.0.61")
ATTACKER = ("02:00:c6:12:02:0b", "198.18.0.62")
SLEEPER = ("02:00:c6:12:02:0c", "198.18.0.63")  # registered, powered off
BYSTANDER = ("02:00:c6:12:02:0d", "198.18.0.64")
STRANGER = "02:00:c6:12:02:66"  # registered nowhere
GATEWAY = "198.18.0.1"
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	set -- $staticroutes
	while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
	/usr/lib/metadata-init/dhcp-hook
	;;
esac
"""
# The victim's first boot: a lease, a look at the gateway, other services for a moment
# (the window an ARP spoofer uses), then the boot script.
FIRST_BOOT = """udhcpc -i eth0 -f -q -n -t 8 -T 1 -s /etc/udhcpc.script -O staticroutes -O 224 >/dev/null 2>&1 || exit 90
ping -c 1 -W 1 198.18.0.1 >/dev/null 2>&1
sleep 2.5
metadata-init; rc=$?
echo "hostname=$(hostname)"
exit $rc"""


def fake_document(hostname: str) -> str:
    """What the attacker serves: a well-formed document of its own choosing."""
    spec = parse_vm(guest_body(1, hostname=hostname), mac=VICTIM[0]).spec
    vm = VM(spec, "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b", State.REGISTERED, {}, None, 0.0, 0.0)
    options = DocumentOptions(default_domain=None, public_url="http://169.254.169.254")
    return render_guest_document(vm, options).text_body.decode()


FAKE_SERVER = """
import http.server, sys
body = open(sys.argv[2], "rb").read()
class Fake(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        self.send_response(204); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), Fake).serve_forever()
"""


@dataclass
class Bed:
    net: BridgeNetwork
    server: ServerProcess
    guard_on: bool
    victim: Port
    attacker: Port
    tmp: Path
    spawned: list[subprocess.Popen[bytes]]

    def spawn(self, port: Port, *argv: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"spawned-{len(self.spawned)}.log").open("wb") as log:
            process = port.ns.popen(*argv, stdout=log, stderr=subprocess.STDOUT)
        self.spawned.append(process)
        return process

    def fake_server(self, port: Port, listen_port: int) -> None:
        doc = self.tmp / "fake.txt"
        doc.write_text(fake_document("pwned"))
        self.spawn(port, sys.executable, "-c", FAKE_SERVER, str(listen_port), str(doc))
        time.sleep(0.5)

    def spoof_arp(self, port: Port, address: str) -> None:
        """Claim `address` by gratuitous ARP, five times a second, until the test ends."""
        loop = f"while :; do arping -q -c 1 -U -I eth0 -s {address} {address}; arping -q -c 1 -A -I eth0 -s {address} {address}; sleep 0.2; done"
        self.spawn(port, "sh", "-c", loop)

    async def guard(self) -> dict[str, Any]:
        status, body = await admin_call(self.server, "GET", "/api/v1/guard")
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    async def drops(self, sender: str) -> int:
        body = await self.guard()
        if not body["enabled"]:
            return 0
        return sum(body["drops"].get(sender, {}).values())

    async def boot_victim(self, make: Callable[..., Guest]) -> tuple[int, str, Guest]:
        guest = make("busybox")
        guest.set_identity(mac=VICTIM[0])
        guest.rootfs.write("/etc/udhcpc.script", UDHCPC_SCRIPT, mode=0o755)
        result = await guest.rootfs.run_async(
            ["/bin/sh", "-c", FIRST_BOOT],
            netns=self.victim.ns.name,
            hostname="template",
            timeout=90,
        )
        out = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        return result.returncode, out.get("hostname", ""), guest


@pytest.fixture(params=[False, True], ids=["guard-off", "guard-on"])
@root_fixture
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bed]:
    need_root()
    need_tools("ip", "dnsmasq", "busybox", "nft", "arping", "curl")
    guard_on: bool = request.param
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    with (templates / "dnsmasq.conf.j2").open("a") as conf:
        conf.write("# The real server answers a second late: a rogue one is always first.\n")
        conf.write("dhcp-reply-delay=1\n")
    spawned: list[subprocess.Popen[bytes]] = []
    with bridge_network() as net:
        victim = net.add_guest(VICTIM[0])
        attacker = net.add_guest(ATTACKER[0])
        sleeper = net.add_guest(SLEEPER[0])
        bindings = {
            host_port(net, port): mac
            for port, mac in ((victim, VICTIM[0]), (attacker, ATTACKER[0]), (sleeper, SLEEPER[0]))
        }
        net.dom0.run("ip", "link", "del", host_port(net, sleeper))  # powered off
        extra = f'[guard]\nenabled = {"true" if guard_on else "false"}\nguest_ports = ["vh*"]\n'
        extra += "[guard.ports]\n" + "".join(
            f'"{port}" = "{mac}"\n' for port, mac in bindings.items()
        )
        config = dom0_config(tmp_path, templates=templates, extra=extra)
        env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
        with server_process(
            ["--config", str(config)], tmp_path / "server.log", env=env, prefix=net.dom0.argv()
        ) as server:
            for n, (mac, address) in enumerate((VICTIM, ATTACKER, SLEEPER, BYSTANDER), start=1):
                body = guest_body(
                    n,
                    hostname=f"guest{n}",
                    ipv4={"address": address, "prefix": 24, "gateway": GATEWAY},
                )
                status, answer = asyncio.run(admin_call(server, "PUT", f"/api/v1/vms/{mac}", body))
                assert status == 201, answer
            asyncio.run(wait_for_dhcp(server, 0))
            bed = Bed(net, server, guard_on, victim, attacker, tmp_path, spawned)
            if guard_on:
                asyncio.run(wait_for_guests(bed, 4))
            try:
                yield bed
            finally:
                for process in spawned:
                    process.kill()
                    process.wait()


async def wait_for_guests(bed: Bed, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await bed.guard()).get("guests") == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the guard never held {count} guests: {await bed.guard()}")


def host_port(net: BridgeNetwork, port: Port) -> str:
    """The bridge port (in Dom0) of a guest's veth."""
    peer = json.loads(port.ns.run("ip", "-j", "link", "show", "eth0"))[0]["link_index"]
    links = json.loads(net.dom0.run("ip", "-j", "link", "show", "master", "br0"))
    return next(str(link["ifname"]) for link in links if link["ifindex"] == peer)


def take(port: Port, address: str, mac: str | None = None) -> None:
    if mac is not None:
        port.ns.run("ip", "link", "set", "eth0", "down")
        port.ns.run("ip", "link", "set", "eth0", "address", mac)
        port.ns.run("ip", "link", "set", "eth0", "up")
    port.ns.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    port.ns.run("ip", "route", "replace", "169.254.169.254/32", "via", GATEWAY)


def verdict(bed: Bed, hostname: str, returncode: int) -> None:
    if bed.guard_on:
        assert (returncode, hostname) == (0, "guest1"), "configured from the real server"
    else:
        assert hostname == "pwned", "without the guard, the attacker's document is applied"


async def test_a_gateway_arp_spoofer_with_a_fake_metadata_server(
    bed: Bed, make_guest: Callable[..., Guest]
) -> None:
    take(bed.attacker, ATTACKER[1])
    bed.attacker.ns.run("ip", "addr", "add", f"{GATEWAY}/32", "dev", "eth0")
    bed.attacker.ns.run("ip", "addr", "add", "169.254.169.254/32", "dev", "eth0")
    bed.fake_server(bed.attacker, 80)
    bed.spoof_arp(bed.attacker, GATEWAY)
    returncode, hostname, _ = await bed.boot_victim(make_guest)
    verdict(bed, hostname, returncode)
    if bed.guard_on:
        assert await bed.drops(ATTACKER[0]) > 0


async def test_a_rogue_dhcp_server_handing_out_its_own_metadata_url(
    bed: Bed, make_guest: Callable[..., Guest]
) -> None:
    take(bed.attacker, ATTACKER[1])
    bed.fake_server(bed.attacker, 8000)
    bed.spawn(
        bed.attacker,
        "dnsmasq",
        "--no-daemon",
        "--no-ping",  # offer at once, not after checking the address is free
        "--dhcp-broadcast",  # answer the client before it has an address
        "--port=0",
        "--interface=eth0",
        "--bind-interfaces",
        "--dhcp-leasefile=/dev/null",
        "--dhcp-range=198.18.0.200,198.18.0.210,255.255.255.0,120",
        f"--dhcp-option=224,http://{ATTACKER[1]}:8000",  # no shell: no quotes
        f"--dhcp-option=121,169.254.169.254/32,{ATTACKER[1]},0.0.0.0/0,{ATTACKER[1]}",
    )
    time.sleep(0.5)
    returncode, hostname, _ = await bed.boot_victim(make_guest)
    verdict(bed, hostname, returncode)
    if bed.guard_on:
        assert await bed.drops(ATTACKER[0]) > 0


def udp_reaches(sender: Port, receiver: Port, source: str, destination: str) -> bool:
    """Whether a UDP datagram from `source` (bound on the sender) reaches the receiver."""
    listener = receiver.ns.popen(
        sys.executable,
        "-c",
        "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',9999)); s.settimeout(3)\n"
        "try:\n data,_=s.recvfrom(100); print(data.decode())\nexcept OSError: print('nothing')",
        stdout=subprocess.PIPE,
    )
    time.sleep(0.3)
    sender.ns.run(
        sys.executable,
        "-c",
        f"import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{source}',0))\n"
        f"for _ in range(5): s.sendto(b'hello', ('{destination}', 9999))",
    )
    out, _ = listener.communicate(timeout=10)
    return out.decode().strip() == "hello"


async def test_an_attacker_spoofing_another_guests_address(bed: Bed) -> None:
    take(bed.victim, VICTIM[1])
    take(bed.attacker, ATTACKER[1])
    bed.attacker.ns.run("ip", "addr", "add", f"{BYSTANDER[1]}/32", "dev", "eth0")
    # The neighbour entries are set by hand: only the spoofed source is under test.
    bed.victim.ns.run("ip", "neigh", "replace", BYSTANDER[1], "lladdr", ATTACKER[0], "dev", "eth0")
    bed.attacker.ns.run("ip", "neigh", "replace", VICTIM[1], "lladdr", VICTIM[0], "dev", "eth0")
    reached = udp_reaches(bed.attacker, bed.victim, BYSTANDER[1], VICTIM[1])
    assert reached is not bed.guard_on
    if bed.guard_on:
        assert await bed.drops(ATTACKER[0]) > 0
        assert udp_reaches(bed.attacker, bed.victim, ATTACKER[1], VICTIM[1]), (
            "its own address passes"
        )


async def test_the_mac_and_address_of_a_powered_off_guest_on_another_port(bed: Bed) -> None:
    take(bed.attacker, SLEEPER[1], mac=SLEEPER[0])
    out = bed.attacker.ns.run(
        "curl",
        "-s",
        "--max-time",
        "4",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://169.254.169.254/v1/config.txt",
        check=False,
    )
    if bed.guard_on:
        assert out in ("", "000")
        assert await bed.drops(host_port(bed.net, bed.attacker)) > 0
    else:
        assert out == "200", "without the guard, it gets the sleeping guest's configuration"


async def test_an_unregistered_mac_gets_nothing_but_a_dhcp_refusal(bed: Bed) -> None:
    take(bed.victim, VICTIM[1])
    take(bed.attacker, "198.18.0.99", mac=STRANGER)
    bed.victim.ns.run("ip", "neigh", "replace", "198.18.0.99", "lladdr", STRANGER, "dev", "eth0")
    reached = udp_reaches(bed.attacker, bed.victim, "198.18.0.99", VICTIM[1])
    assert reached is not bed.guard_on
    lease = bed.attacker.ns.run(
        "sh",
        "-c",
        "busybox udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /bin/true 2>&1",
        check=False,
        timeout=30,
    )
    assert "lease of" not in lease  # no reservation: dnsmasq refuses it either way
    if bed.guard_on:
        assert (await bed.guard())["unregistered_drops"] > 0


async def test_guests_at_their_own_addresses_talk_to_each_other(bed: Bed) -> None:
    take(bed.victim, VICTIM[1])
    take(bed.attacker, ATTACKER[1])
    bed.victim.ns.run("busybox", "ping", "-c", "2", "-W", "2", ATTACKER[1])
    bed.victim.ns.run("busybox", "ping", "-c", "1", "-W", "2", GATEWAY)
