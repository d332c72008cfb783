"""The whole server: a guest added through the admin API resolves at once, both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.dns.service import DnsService
from tests.dns.support import ZONE, parse, query, tcp_exchange, udp_exchange
from tests.support.records import guest_body, mac_of
from tests.support.service import ADMIN_TOKEN, Api, make_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[MetadataService, DnsService, Api]]:
    """The server as `serve` runs it, with `[dns] listen` set: DNS starts and stops with it."""
    service = MetadataService(
        make_settings(tmp_path, domain=ZONE, **{"dns.listen": ["127.0.0.1:0"]})
    )
    await service.start()
    try:
        assert service.admin_address is not None and service.dns is not None
        async with aiohttp.ClientSession() as session:
            yield service, service.dns, Api(session, service.admin_address.url, ADMIN_TOKEN)
    finally:
        await service.stop()
    assert service.dns is None


async def test_admin_changes_resolve_at_once(
    server: tuple[MetadataService, DnsService, Api],
) -> None:
    _, dns, admin = server
    address = dns.addresses[0]
    status, _ = await admin.put(f"/api/v1/vms/{mac_of(7)}", json=guest_body(7))
    assert status == 201
    reply = parse(await udp_exchange(address, query(f"guest7.{ZONE}")))
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.17"]
    reply = parse(await tcp_exchange(address, query("17.0.18.198.in-addr.arpa", "PTR")))
    assert [str(rr.rdata) for rr in reply.rr] == [f"guest7.{ZONE}."]

    status, _ = await admin.patch(f"/api/v1/vms/{mac_of(7)}", json={"domain": "elsewhere.example"})
    assert status == 200
    assert parse(await udp_exchange(address, query(f"guest7.{ZONE}"))).header.rcode == 3

    status, _ = await admin.delete(f"/api/v1/vms/{mac_of(7)}")
    assert status in (200, 204)
    reply = parse(await udp_exchange(address, query("17.0.18.198.in-addr.arpa", "PTR")))
    assert reply.header.rcode == 5  # no guest there any more, and no upstream to ask


async def test_bulk_import_resolves_at_once(
    server: tuple[MetadataService, DnsService, Api],
) -> None:
    _, dns, admin = server
    rows = [{**guest_body(n), "mac": mac_of(n)} for n in range(20, 40)]
    status, body = await admin.post("/api/v1/vms/import", json=rows)
    assert status in (200, 201), body
    for n in (20, 39):
        reply = parse(await udp_exchange(dns.addresses[0], query(f"guest{n}.{ZONE}")))
        assert [str(rr.rdata) for rr in reply.rr] == [f"198.18.0.{n + 10}"]
