"""One bad guest never freezes DHCP for the others: a record the daemon cannot be given
(stored before a check existed, or on a subnet taken out of the configuration) is left
out, named with its reason in the DHCP status, and every other guest's change still
passes the daemon's own checker and reaches the files. Real checkers, real store."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.dhcp.daemons import Daemon, Dhcpd, Dnsmasq, Kea
from metadata_server.dhcp.render import DhcpPlan
from metadata_server.dhcp.subnets import Subnet
from metadata_server.dhcp.sync import DhcpSync
from metadata_server.dhcp.templates import template_environment
from metadata_server.model import VM, State, parse_vm
from metadata_server.store import Store, open_store
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.service import ADMIN_TOKEN, make_settings

SUBNET = Subnet(
    ipaddress.IPv4Network("198.18.0.0/24"),
    ipaddress.IPv4Address("198.18.0.1"),
    None,
    ("198.18.0.1",),
    "guests.internal",
    600,
)
CHECKERS = {"dnsmasq": "dnsmasq", "kea": "kea-dhcp4", "dhcpd": "dhcpd"}
FILES = {"dnsmasq": "dnsmasq-hosts", "kea": "kea-dhcp4.conf", "dhcpd": "dhcpd.conf"}


def daemon_for(name: str, tmp_path: Path) -> Daemon:
    if name == "dnsmasq":
        return Dnsmasq()
    if name == "kea":
        return Kea("kea-dhcp4.conf", tmp_path / "no-kea.sock")
    return Dhcpd("dhcpd.conf")


def record(n: int, address: str, **fields: str) -> VM:
    """A record as an older server stored it: never through today's registry checks."""
    spec = parse_vm(guest_body(n, ipv4={"address": address, "prefix": 24}), mac=mac_of(n)).spec
    spec = replace(spec, **fields)  # type: ignore[arg-type]
    return VM(spec, f"id-{n}", State.REGISTERED, {"registered": 0.0}, None, 0.0, 0.0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    the_store = open_store(str(tmp_path / "registry.db"))
    await the_store.open()
    try:
        yield the_store
    finally:
        await the_store.close()


BAD = {
    "outside-every-subnet": (record(2, "198.20.0.12"), "outside every configured subnet"),
    "hostname-newline": (
        record(2, "198.18.0.12", hostname="web\n"),
        "host name is not one lower-case",
    ),
    "hostname-quote": (
        record(2, "198.18.0.12", hostname='x";\n}\nhost evil {'),
        "host name is not one lower-case",
    ),
    "on-the-gateway": (record(2, "198.18.0.1"), "gateway of 198.18.0.0/24"),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("name", list(CHECKERS))
async def test_a_bad_record_is_left_out_and_the_others_reach_the_checked_files(
    name: str, bad: str, store: Store, tmp_path: Path
) -> None:
    need_tools(CHECKERS[name])
    directory = tmp_path / "dhcp"
    sync = DhcpSync(
        daemon_for(name, tmp_path),
        directory,
        DhcpPlan((SUBNET,), kea_control_socket=str(tmp_path / "no-kea.sock")),
        template_environment(),
        store,
        debounce=0.0,
    )
    await store.create(record(1, "198.18.0.11"))
    vm, reason = BAD[bad]
    await store.create(vm)
    status = await sync.sync_now()
    assert status.ok is True, status.error  # the real checker took the files
    assert status.guests == 1
    (left,) = status.left_out
    assert (left["mac"], left["address"]) == (mac_of(2), vm.spec.ipv4.address)
    assert reason in left["reason"]
    text = (directory / FILES[name]).read_text()
    assert mac_of(1) in text and mac_of(2) not in text
    if name == "kea":
        json.loads(text)

    # A later change for another guest still reaches the daemon's files.
    await store.create(record(3, "198.18.0.13"))
    status = await sync.sync_now()
    assert status.ok is True and status.guests == 2 and len(status.left_out) == 1
    assert mac_of(3) in (directory / FILES[name]).read_text()
    # The bad record fixed: nobody is left out any more.
    await store.replace(record(2, "198.18.0.12"))
    status = await sync.sync_now()
    assert status.ok is True and status.guests == 3 and status.left_out == []


async def status_of(service: MetadataService) -> dict[str, object]:
    assert service.admin_address is not None
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{service.admin_address.url}/api/v1/dhcp/status", headers=headers) as reply,
    ):
        assert reply.status == 200
        body: dict[str, object] = await reply.json()
        return body


async def test_a_subnet_taken_out_of_the_configuration_leaves_its_guests_out(
    tmp_path: Path,
) -> None:
    """The admin drops a subnet and restarts: its guests are named in GET /dhcp/status,
    the other subnet's guests keep their reservations and their changes go through."""
    need_tools("dnsmasq")
    two = [
        {"cidr": "198.18.0.0/24", "gateway": "198.18.0.1"},
        {"cidr": "198.19.0.0/24", "gateway": "198.19.0.1"},
    ]
    flags = {"dhcp.daemon": "dnsmasq", "dhcp.directory": str(tmp_path / "dhcp")}
    flags["dhcp.debounce_ms"] = 20  # type: ignore[assignment]
    first = MetadataService(make_settings(tmp_path, **flags, **{"dhcp.subnets": two}))
    await first.start()
    try:
        assert first.registry is not None
        await first.registry.put(mac_of(1), guest_body(1))
        await first.registry.put(
            mac_of(2),
            guest_body(2, ipv4={"address": "198.19.0.12", "prefix": 24, "gateway": "198.19.0.1"}),
        )
    finally:
        await first.stop()

    service = MetadataService(make_settings(tmp_path, **flags, **{"dhcp.subnets": two[:1]}))
    await service.start()
    try:
        status = await status_of(service)
        assert status["ok"] is True and status["guests"] == 1
        assert status["left_out"] == [
            {
                "mac": mac_of(2),
                "address": "198.19.0.12",
                "reason": "outside every configured subnet",
            }
        ]
        assert service.registry is not None and service.dhcp is not None
        await service.registry.put(mac_of(3), guest_body(3))
        for _ in range(200):
            hosts = (tmp_path / "dhcp" / "dnsmasq-hosts").read_text()
            if mac_of(3) in hosts:
                break
            await asyncio.sleep(0.02)
        assert mac_of(1) in hosts and mac_of(3) in hosts and mac_of(2) not in hosts
        assert (await status_of(service))["ok"] is True
    finally:
        await service.stop()
