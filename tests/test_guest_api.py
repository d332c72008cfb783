"""The guest API over real HTTP from loopback addresses: own document only, secrets once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.service import Api, make_settings

MAC = mac_of(1)


def loopback_guest(n: int, address: str, **overrides: object) -> dict[str, object]:
    return guest_body(n, ipv4={"address": address, "prefix": 8}, **overrides)


async def register(service: MetadataService, n: int, address: str, **overrides: object) -> None:
    assert service.registry is not None
    await service.registry.put(mac_of(n), loopback_guest(n, address, **overrides))


def client_from(service: MetadataService, address: str) -> aiohttp.ClientSession:
    """A session whose requests leave from `address` (any 127/8 address works on lo)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def get_from(
    service: MetadataService, address: str, path: str, **kwargs: object
) -> tuple[int, object]:
    async with client_from(service, address) as session:
        return await Api(session, service.guest_addresses[0].url, None).get(path, **kwargs)


async def test_config_is_the_callers_own(service: MetadataService, guest: Api) -> None:
    await register(
        service, 1, "127.0.0.1", user_data="#!/bin/sh\necho hi\n", metadata={"role": "web"}
    )
    await register(service, 2, "127.0.0.2")
    status, doc = await guest.get("/v1/config")
    assert status == 200
    assert doc == {
        "instance_id": doc["instance_id"],
        "hostname": "guest1",
        "fqdn": "guest1",
        "domain": None,
        "password_hash": SAMPLE_HASH,
        "ssh_keys": [SAMPLE_KEY],
        "network": {
            "mac": MAC,
            "address": "127.0.0.1",
            "prefix": 8,
            "gateway": None,
            "dns": ["198.18.0.1"],
        },
        "user_data": "#!/bin/sh\necho hi\n",
        "metadata": {"role": "web"},
        "status_url": "http://169.254.169.254/v1/status",
    }
    status, other = await get_from(service, "127.0.0.2", "/v1/config")
    assert status == 200 and other["hostname"] == "guest2"  # type: ignore[index]


async def test_unknown_caller_learns_nothing(service: MetadataService) -> None:
    await register(service, 1, "127.0.0.1")
    status, body = await get_from(service, "127.0.0.9", "/v1/config")
    assert status == 404
    text = json.dumps(body)
    assert MAC not in text and "guest1" not in text and "127.0.0.1" not in text


async def test_etag_and_not_modified(service: MetadataService) -> None:
    await register(service, 1, "127.0.0.1")
    async with aiohttp.ClientSession() as session:
        url = service.guest_addresses[0].url + "/v1/config"
        async with session.get(url) as first:
            etag = first.headers["ETag"]
            assert first.status == 200
        async with session.get(url, headers={"If-None-Match": etag}) as second:
            assert second.status == 304 and second.headers["ETag"] == etag
        async with session.head(url) as head:
            assert head.status == 200


async def test_text_document_is_line_per_value(service: MetadataService, guest: Api) -> None:
    await register(
        service, 1, "127.0.0.1", metadata={"role": "web"}, user_data="x", domain="guests.internal"
    )
    status, raw = await guest.get("/v1/config.txt")
    assert status == 200
    lines = raw.decode().splitlines()
    keys = [line.split(" ", 1)[0] for line in lines]
    assert keys[0] == "format" and keys[-1] == "end"
    assert f"password_hash {SAMPLE_HASH}" in lines
    assert f"ssh_key {SAMPLE_KEY}" in lines
    assert "fqdn guest1.guests.internal" in lines
    assert "metadata.role web" in lines
    assert "user_data_url http://169.254.169.254/v1/user-data" in lines
    assert all(len(line.split(" ", 1)) == 2 for line in lines[:-1])


async def test_secrets_are_served_until_configured_then_gone_until_rearm(
    service: MetadataService, guest: Api
) -> None:
    await register(service, 1, "127.0.0.1", user_data="#cloud-config\n")
    assert (await guest.get("/v1/user-data")) == (200, b"#cloud-config\n")
    _, doc = await guest.get("/v1/config")
    vm = await service.store.get(MAC)
    assert vm is not None and vm.state is State.FETCHED, "reading the document marks it fetched"

    status, _ = await guest.post("/v1/status", json={"state": "configured", "message": "all good"})
    assert status == 204
    vm = await service.store.get(MAC)
    assert vm is not None and vm.state is State.CONFIGURED and vm.message == "all good"

    _, after = await guest.get("/v1/config")
    assert "password_hash" not in after and "user_data" not in after
    assert after["hostname"] == "guest1"
    status, body = await guest.get("/v1/user-data")
    assert status == 410 and body["error"] == "gone"
    _, text = await guest.get("/v1/config.txt")
    assert b"password_hash" not in text and b"user_data_url" not in text

    assert service.registry is not None
    await service.registry.rearm(MAC)
    _, again = await guest.get("/v1/config")
    assert again["password_hash"] == SAMPLE_HASH and again["instance_id"] != doc["instance_id"]


async def test_status_by_form_and_failed_with_reason(service: MetadataService, guest: Api) -> None:
    await register(service, 1, "127.0.0.1")
    status, _ = await guest.post(
        "/v1/status", data={"state": "failed", "message": "bad\nhash\x00!"}
    )
    assert status == 204
    vm = await service.store.get(MAC)
    assert vm is not None and vm.state is State.FAILED and vm.message == "bad hash !"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"state": "leased"}}, 400),
        ({"json": {"state": "configured", "extra": 1}}, 400),
        ({"json": ["configured"]}, 400),
        ({"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": {"state": "configured", "message": "x" * 5000}}, 413),
        ({"json": {"state": "configured", "instance_id": "stale"}}, 409),
        ({"data": {"state": "done"}}, 400),
    ],
    ids=[
        "not-reportable",
        "unknown-field",
        "not-object",
        "non-utf8",
        "bad-json",
        "too-large",
        "stale-instance",
        "bad-form-state",
    ],
)
async def test_bad_status_changes_nothing(
    service: MetadataService, guest: Api, kwargs: dict[str, object], status: int
) -> None:
    await register(service, 1, "127.0.0.1")
    got, body = await guest.post("/v1/status", **kwargs)
    assert got == status and body["detail"]
    vm = await service.store.get(MAC)
    assert vm is not None and vm.state is State.REGISTERED


async def test_status_from_unknown_caller_is_404(service: MetadataService) -> None:
    await register(service, 1, "127.0.0.1")
    async with client_from(service, "127.0.0.7") as session:
        got, _ = await Api(session, service.guest_addresses[0].url, None).post(
            "/v1/status", json={"state": "configured"}
        )
    assert got == 404
    vm = await service.store.get(MAC)
    assert vm is not None and vm.state is State.REGISTERED


async def test_forwarded_for_counts_only_from_trusted_proxies(tmp_path: Path) -> None:
    untrusted = MetadataService(make_settings(tmp_path / "a"))
    trusted = MetadataService(
        make_settings(tmp_path / "b", **{"guest.trust_proxy": ["127.0.0.1/32"]})
    )
    for svc in (untrusted, trusted):
        await svc.start()
    try:
        for svc in (untrusted, trusted):
            await register(svc, 1, "127.0.0.1")
            await register(svc, 2, "198.18.0.12")
        header = {"X-Forwarded-For": "203.0.113.9, 198.18.0.12"}
        status, doc = await get_from(untrusted, "127.0.0.1", "/v1/config", headers=header)
        assert status == 200 and doc["hostname"] == "guest1"  # type: ignore[index]
        status, doc = await get_from(trusted, "127.0.0.1", "/v1/config", headers=header)
        assert status == 200 and doc["hostname"] == "guest2"  # type: ignore[index]
        status, _ = await get_from(
            trusted, "127.0.0.1", "/v1/config", headers={"X-Forwarded-For": "junk"}
        )
        assert status == 403
    finally:
        for svc in (untrusted, trusted):
            await svc.stop()


async def test_guest_requests_do_not_touch_the_database(
    service: MetadataService, guest: Api
) -> None:
    await register(service, 1, "127.0.0.1")
    await guest.get("/v1/config")  # the first read marks the guest fetched

    async def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("the guest fast path queried the database")

    service.store.get = no_database  # type: ignore[method-assign]
    service.store.list = no_database  # type: ignore[method-assign]
    for path in ("/v1/config", "/v1/config.txt", "/v1/user-data", "/healthz"):
        status, _ = await guest.get(path)
        assert status in (200, 404)


@pytest.fixture
async def restarted(tmp_path: Path) -> AsyncIterator[tuple[MetadataService, str]]:
    first = MetadataService(make_settings(tmp_path))
    await first.start()
    await register(first, 1, "127.0.0.1", user_data="kept")
    vm = await first.store.get(MAC)
    assert vm is not None
    await first.stop()
    second = MetadataService(make_settings(tmp_path))
    await second.start()
    try:
        yield second, vm.instance_id
    finally:
        await second.stop()


async def test_restart_serves_the_same_data(restarted: tuple[MetadataService, str]) -> None:
    service, instance_id = restarted
    status, doc = await get_from(service, "127.0.0.1", "/v1/config")
    assert status == 200
    assert doc["instance_id"] == instance_id and doc["user_data"] == "kept"  # type: ignore[index]


async def test_a_server_with_a_host_name_serves_only_its_own_guests(tmp_path: Path) -> None:
    need_tools("dhcpd")
    service = MetadataService(
        make_settings(
            tmp_path,
            host_name="dom0-a",
            **{"dhcp.daemon": "dhcpd", "dhcp.subnets": [{"cidr": "127.0.0.0/8", "gateway": "127.0.0.254"}],
               "dhcp.debounce_ms": 10, "dhcp.directory": str(tmp_path / "dhcp")},
        )
    )  # fmt: skip
    await service.start()
    try:
        await register(service, 1, "127.0.0.1", host="dom0-a")
        await register(service, 2, "127.0.0.2", host="dom0-b")
        assert (await get_from(service, "127.0.0.1", "/v1/config"))[0] == 200
        assert (await get_from(service, "127.0.0.2", "/v1/config"))[0] == 404
        assert service.registry is not None
        await service.registry.patch(mac_of(1), {"host": "dom0-b"})  # moved to another Dom0
        assert (await get_from(service, "127.0.0.1", "/v1/config"))[0] == 404
        await service.registry.patch(mac_of(2), {"host": "dom0-a"})
        assert (await get_from(service, "127.0.0.2", "/v1/config"))[0] == 200
        assert service.dhcp is not None and service.dhcp.sync is not None
        await service.dhcp.sync.sync_now()
        conf = (tmp_path / "dhcp" / "dhcpd.conf").read_text()
        assert mac_of(2) in conf and mac_of(1) not in conf
    finally:
        await service.stop()
