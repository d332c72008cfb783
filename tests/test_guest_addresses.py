"""Guest addresses through the admin API of a real server: loopback refused unless
`guest.allow_loopback` (the demo turns it on), and with DHCP subnets configured a guest
outside them refused with a 400 naming `ipv4.address`, on PUT, PATCH and per import row,
with nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.config import build_settings
from metadata_server.demo import DEMO_MAC, ensure_demo_guest
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.service import Api, make_settings

SUBNETS = [{"cidr": "198.18.0.0/24", "gateway": "198.18.0.1"}]


async def running(settings: Any) -> AsyncIterator[tuple[MetadataService, Api]]:
    service = MetadataService(settings)
    await service.start()
    try:
        assert service.admin_address is not None
        async with aiohttp.ClientSession() as session:
            yield service, Api(session, service.admin_address.url, settings.admin.token)
    finally:
        await service.stop()


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[tuple[MetadataService, Api]]:
    """A server as shipped: no loopback guests, dnsmasq on one subnet."""
    need_tools("dnsmasq")
    settings = make_settings(
        tmp_path,
        **{
            "guest.allow_loopback": False,
            "dhcp.daemon": "dnsmasq",
            "dhcp.subnets": SUBNETS,
            "dhcp.directory": str(tmp_path / "dhcp"),
        },
    )
    async for pair in running(settings):
        yield pair


LOOPBACK = {"ipv4": {"address": "127.0.0.1", "prefix": 8}}
OUTSIDE = {"ipv4": {"address": "198.19.0.5", "prefix": 24, "gateway": "198.19.0.1"}}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (LOOPBACK, "ipv4.address", "loopback"),
        ({"dns": ["127.0.0.53"]}, "dns[0]", "loopback"),
        ({"ipv4": {"address": "169.254.3.3", "prefix": 16}}, "ipv4.address", "link-local"),
        (OUTSIDE, "ipv4.address", "outside every configured DHCP subnet (198.18.0.0/24)"),
        ({"ipv4": {"address": "198.18.0.1", "prefix": 24}}, "ipv4.address", "gateway"),
    ],
    ids=["loopback", "dns-loopback", "link-local", "outside-subnets", "subnet-gateway"],
)
async def test_put_refuses_and_stores_nothing(
    strict: tuple[MetadataService, Api], change: dict[str, Any], field: str, words: str
) -> None:
    service, api = strict
    status, body = await api.put(f"/api/v1/vms/{mac_of(1)}", json=guest_body(1, **change))
    assert status == 400 and body["field"] == field and words in body["detail"], body
    assert await service.store.get(mac_of(1)) is None


async def test_patch_into_another_subnet_is_refused(strict: tuple[MetadataService, Api]) -> None:
    service, api = strict
    assert (await api.put(f"/api/v1/vms/{mac_of(1)}", json=guest_body(1)))[0] == 201
    status, body = await api.patch(f"/api/v1/vms/{mac_of(1)}", json=OUTSIDE)
    assert status == 400 and body["field"] == "ipv4.address"
    stored = await service.store.get(mac_of(1))
    assert stored is not None and stored.spec.ipv4.address == "198.18.0.11"


async def test_an_import_names_each_bad_row_and_imports_nothing(
    strict: tuple[MetadataService, Api],
) -> None:
    service, api = strict
    rows = [
        {"mac": mac_of(1), **guest_body(1)},
        {"mac": mac_of(2), **guest_body(2, **OUTSIDE)},
        {"mac": mac_of(3), **guest_body(3, **LOOPBACK)},
    ]
    status, body = await api.post("/api/v1/vms/import", json=rows)
    assert status == 400
    assert [(row["index"], row["field"]) for row in body["rows"]] == [
        (1, "ipv4.address"),
        (2, "ipv4.address"),
    ]
    assert await service.store.list() == []


async def test_loopback_guests_are_taken_where_the_setting_allows_them(tmp_path: Path) -> None:
    async for service, api in running(make_settings(tmp_path, **{"guest.allow_loopback": True})):
        status, body = await api.put(f"/api/v1/vms/{mac_of(1)}", json=guest_body(1, **LOOPBACK))
        assert status == 201, body
        assert service.settings.guest.allow_loopback is True


async def test_the_demo_still_registers_its_loopback_guest(tmp_path: Path) -> None:
    """`serve --demo`: the demo guest is whoever calls from 127.0.0.1."""
    flags = {
        "db": str(tmp_path / "demo.db"),
        "guest.listen": ["127.0.0.1:0"],
        "admin.listen": "127.0.0.1:0",
        "admin.token": "demo-token-0123456789",
    }
    settings = build_settings(config_file=None, env={}, flags=flags, demo=True)
    assert settings.guest.allow_loopback is True
    service = MetadataService(settings)
    await service.start()
    try:
        assert service.registry is not None
        await ensure_demo_guest(service.registry)
        assert (await service.registry.get(DEMO_MAC)).spec.ipv4.address == "127.0.0.1"
        url = service.guest_addresses[0].url
        async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/config") as reply:
            assert reply.status == 200
            assert (await reply.json())["hostname"] == "demo"
    finally:
        await service.stop()
