"""The EC2, OpenStack and NoCloud views over real HTTP from loopback guests: EC2
conventions, IMDSv2 tokens, change notification, rate limits and bad input."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from multidict import CIMultiDict
from yarl import URL

from metadata_server.app import MetadataService
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, guest_body, mac_of
from tests.support.service import make_settings


async def started(tmp_path: Path, **flags: object) -> MetadataService:
    service = MetadataService(make_settings(tmp_path, **flags))
    await service.start()
    assert service.registry is not None
    await service.registry.put(
        mac_of(1),
        guest_body(
            1,
            ipv4={"address": "127.0.0.1", "prefix": 8, "gateway": "127.0.0.254"},
            domain="guests.internal",
            user_data="#!/bin/sh\necho hi\n",
            metadata={"role": "web"},
        ),
    )
    await service.registry.put(mac_of(2), guest_body(2, ipv4={"address": "127.0.0.2", "prefix": 8}))
    return service


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[MetadataService]:
    service = await started(tmp_path)
    try:
        yield service
    finally:
        await service.stop()


async def fetch(
    service: MetadataService,
    path: str,
    *,
    method: str = "GET",
    source: str = "127.0.0.1",
    **kw: object,
) -> tuple[int, str, dict[str, str]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = URL(service.guest_addresses[0].url + path, encoded=True)
        async with session.request(method, url, **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.text(), CIMultiDict(r.headers)  # type: ignore[return-value]


IFACE = f"/latest/meta-data/network/interfaces/macs/{mac_of(1)}"


async def test_ec2_tree_follows_ec2_conventions(svc: MetadataService) -> None:
    vm = await svc.store.get(mac_of(1))
    assert vm is not None
    expected = {
        "/latest/meta-data/instance-id": vm.instance_id,
        "/latest/meta-data/local-hostname": "guest1.guests.internal",
        "/latest/meta-data/hostname": "guest1.guests.internal",
        "/latest/meta-data/local-ipv4": "127.0.0.1",
        "/latest/meta-data/mac": mac_of(1),
        "/latest/meta-data/instance-type": "xen.guest",
        "/latest/meta-data/placement/availability-zone": "local-1a",
        "/latest/meta-data/services/domain": "guests.internal",
        "/latest/meta-data/ami-id": "ami-00000000000000000",
        "/latest/meta-data/ami-launch-index": "0",
        "/latest/meta-data/security-groups": "default",
        "/latest/meta-data/block-device-mapping/": "ami\nroot",
        "/latest/meta-data/block-device-mapping/ami": "/dev/xvda",
        "/latest/meta-data/block-device-mapping/root": "/dev/xvda",
        "/latest/meta-data/public-keys/": "0=admin@example",
        "/latest/meta-data/public-keys/0/": "openssh-key",
        "/latest/meta-data/public-keys/0/openssh-key": SAMPLE_KEY,
        f"{IFACE}/device-number": "0",
        f"{IFACE}/local-ipv4s": "127.0.0.1",
        f"{IFACE}/subnet-ipv4-cidr-block": "127.0.0.0/8",
        "/latest/meta-data/network/interfaces/macs/": f"{mac_of(1)}/",
        "/latest/user-data": "#!/bin/sh\necho hi\n",
        "/2009-04-04/meta-data/instance-id": vm.instance_id,
        "/2021-03-23/meta-data/local-ipv4": "127.0.0.1",
    }
    for path, body in expected.items():
        status, text, headers = await fetch(svc, path)
        assert (status, text) == (200, body), path
        assert headers["Content-Type"].startswith("text/plain"), path
    _, root, _ = await fetch(svc, "/")
    assert {"1.0", "2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest"} <= set(
        root.split("\n")
    )
    _, listing, _ = await fetch(svc, "/latest/meta-data/")
    assert {
        "instance-id",
        "placement/",
        "ami-id",
        "reservation-id",
        "block-device-mapping/",
    } <= set(listing.split("\n"))
    assert "product-codes" not in listing.split("\n")
    _, reservation, _ = await fetch(svc, "/latest/meta-data/reservation-id")
    assert re.fullmatch(r"r-[0-9a-f]{17}", reservation)
    assert (await fetch(svc, "/2009-04-04/meta-data/reservation-id"))[1] == reservation
    status, text, _ = await fetch(svc, "/latest/dynamic/instance-identity/document")
    document = json.loads(text)
    assert {
        k: document[k]
        for k in ("instanceId", "privateIp", "availabilityZone", "instanceType", "region")
    } == {
        "instanceId": vm.instance_id,
        "privateIp": "127.0.0.1",
        "availabilityZone": "local-1a",
        "instanceType": "xen.guest",
        "region": "local-1",
    }
    assert document["pendingTime"].endswith("Z") and document["version"]
    assert document["imageId"] == "ami-00000000000000000"


async def test_reservation_id_is_new_with_each_launch(svc: MetadataService) -> None:
    """A re-arm is a new launch: a new instance id, so a new reservation id; the other
    guest's stays its own."""
    assert svc.registry is not None
    before = (await fetch(svc, "/latest/meta-data/reservation-id"))[1]
    other = (await fetch(svc, "/latest/meta-data/reservation-id", source="127.0.0.2"))[1]
    assert before != other
    assert (await fetch(svc, "/latest/meta-data/reservation-id"))[1] == before
    await svc.registry.rearm(mac_of(1))
    after = (await fetch(svc, "/latest/meta-data/reservation-id"))[1]
    assert re.fullmatch(r"r-[0-9a-f]{17}", after) and after != before


async def test_user_data_404_when_none_or_withheld(svc: MetadataService) -> None:
    assert (await fetch(svc, "/latest/user-data", source="127.0.0.2"))[0] == 404
    assert svc.registry is not None
    from metadata_server.model import State

    await svc.registry.set_state(mac_of(1), State.CONFIGURED, None)
    assert (await fetch(svc, "/latest/user-data"))[0] == 404
    _, user_data, _ = await fetch(svc, "/nocloud/user-data")
    assert SAMPLE_HASH not in user_data and "echo hi" not in user_data


async def test_openstack_and_nocloud(svc: MetadataService) -> None:
    _, versions, _ = await fetch(svc, "/openstack")
    assert versions.split("\n")[-1] == "latest" and "2018-08-27" in versions
    _status, text, _ = await fetch(svc, "/openstack/2018-08-27/meta_data.json")
    meta = json.loads(text)
    assert meta["name"] == "guest1" and meta["hostname"] == "guest1.guests.internal"
    assert meta["public_keys"] == {"key-0": SAMPLE_KEY} and meta["meta"] == {"role": "web"}
    assert meta["keys"][0]["data"] == SAMPLE_KEY and meta["launch_index"] == 0
    _, text, _ = await fetch(svc, "/openstack/latest/network_data.json")
    network = json.loads(text)
    assert network["links"][0]["ethernet_mac_address"] == mac_of(1)
    assert network["networks"][0]["ip_address"] == "127.0.0.1"
    assert network["networks"][0]["routes"][0]["gateway"] == "127.0.0.254"
    assert network["services"] == [{"type": "dns", "address": "198.18.0.1"}]
    for name in ("vendor_data.json", "vendor_data2.json"):
        assert (await fetch(svc, f"/openstack/latest/{name}"))[1] == "{}"

    _, text, _ = await fetch(svc, "/nocloud/meta-data")
    assert yaml.safe_load(text)["local-hostname"] == "guest1.guests.internal"
    _, text, _ = await fetch(svc, "/nocloud/network-config")
    config = yaml.safe_load(text)
    assert config["version"] == 2
    assert config["ethernets"]["primary"]["addresses"] == ["127.0.0.1/8"]


CLOUD_CONFIG = """#cloud-config
packages: [nginx]
chpasswd:
  users:
  - {name: bob, password: x}
"""


async def test_cloud_config_user_data_is_merged(tmp_path: Path) -> None:
    service = await started(tmp_path)
    try:
        assert service.registry is not None
        await service.registry.patch(
            mac_of(1),
            {"user_data": CLOUD_CONFIG},
        )
        _, text, _ = await fetch(service, "/nocloud/user-data")
        assert text.startswith("#cloud-config\n")
        merged = yaml.safe_load(text)
        assert merged["packages"] == ["nginx"]
        assert [user["name"] for user in merged["chpasswd"]["users"]] == ["root", "bob"]
        assert merged["chpasswd"]["users"][0] == {
            "name": "root",
            "password": SAMPLE_HASH,
            "type": "hash",
        }
        assert merged["chpasswd"]["expire"] is False
        assert merged["ssh_authorized_keys"] == [SAMPLE_KEY]
    finally:
        await service.stop()


async def test_script_user_data_becomes_multipart(svc: MetadataService) -> None:
    import email

    _, text, _ = await fetch(svc, "/nocloud/user-data")
    message = email.message_from_string(text)
    parts = [
        (part.get_content_type(), part.get_payload(decode=True).decode())
        for part in message.get_payload()
    ]  # type: ignore[union-attr]
    assert parts[0][0] == "text/cloud-config" and SAMPLE_HASH in parts[0][1]
    assert parts[1] == ("text/x-shellscript", "#!/bin/sh\necho hi\n")


async def test_invalid_cloud_config_is_refused_at_registration(svc: MetadataService) -> None:
    from metadata_server.errors import InvalidInput

    assert svc.registry is not None
    with pytest.raises(InvalidInput) as error:
        await svc.registry.patch(
            mac_of(1), {"user_data": "#cloud-config\n- a list, not a mapping\n"}
        )
    assert error.value.field == "user_data"


# --- IMDSv2 ------------------------------------------------------------------------------


async def test_imdsv2_token_flow(svc: MetadataService) -> None:
    status, token, headers = await fetch(
        svc,
        "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
    )
    assert status == 200 and headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    auth = {"X-aws-ec2-metadata-token": token}
    status, text, _ = await fetch(svc, "/latest/meta-data/local-ipv4", headers=auth)
    assert (status, text) == (200, "127.0.0.1")
    status, _, _ = await fetch(
        svc, "/latest/meta-data/local-ipv4", headers={"X-aws-ec2-metadata-token": token + "x"}
    )
    assert status == 401
    status, _, _ = await fetch(
        svc, "/latest/meta-data/local-ipv4", source="127.0.0.2", headers=auth
    )
    assert status == 401, "a token is bound to the guest that asked for it"


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/latest/api/token", {}, 400),
        ("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "0"}, 400),
        ("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, 400),
        ("/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "ten"}, 400),
        (
            "/latest/api/token",
            {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"},
            403,
        ),
        ("/2021-03-23/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, 403),
    ],
    ids=["no-ttl", "ttl-0", "ttl-too-big", "ttl-text", "forwarded", "dated-path"],
)
async def test_bad_token_requests(
    svc: MetadataService, path: str, headers: dict[str, str], status: int
) -> None:
    got, _text, response_headers = await fetch(svc, path, method="PUT", headers=headers)
    assert got == status and response_headers["Content-Type"].startswith("text/plain")


async def test_expired_token_is_401(tmp_path: Path) -> None:
    now = [1_000_000.0]
    service = MetadataService(make_settings(tmp_path), clock=lambda: now[0])
    await service.start()
    try:
        assert service.registry is not None
        await service.registry.put(
            mac_of(1), guest_body(1, ipv4={"address": "127.0.0.1", "prefix": 8})
        )
        _, token, _ = await fetch(
            service,
            "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "5"},
        )
        auth = {"X-aws-ec2-metadata-token": token}
        assert (await fetch(service, "/latest/meta-data/mac", headers=auth))[0] == 200
        now[0] += 6
        assert (await fetch(service, "/latest/meta-data/mac", headers=auth))[0] == 401
    finally:
        await service.stop()


async def test_tokens_required_mode(tmp_path: Path) -> None:
    service = await started(tmp_path, **{"ec2.tokens": "required"})
    try:
        assert (await fetch(service, "/latest/meta-data/mac"))[0] == 401
        _, token, _ = await fetch(
            service,
            "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        status, text, _ = await fetch(
            service, "/latest/meta-data/mac", headers={"X-aws-ec2-metadata-token": token}
        )
        assert (status, text) == (200, mac_of(1))
    finally:
        await service.stop()


GUEST_ROUTES = [
    ("GET", "/v1/config"),
    ("GET", "/v1/config.txt"),
    ("GET", "/v1/user-data"),
    ("POST", "/v1/status"),
    ("GET", "/v1/config?wait_for_change=true&timeout_sec=0"),
    ("GET", "/"),
    ("GET", "/latest/meta-data/instance-id"),
    ("GET", "/openstack"),
    ("GET", "/openstack/latest/meta_data.json"),
    ("GET", "/nocloud/meta-data"),
    ("GET", "/nocloud/user-data"),
]


@pytest.mark.parametrize(("method", "path"), GUEST_ROUTES, ids=[p for _, p in GUEST_ROUTES])
async def test_required_tokens_cover_every_guest_route(
    tmp_path: Path, method: str, path: str
) -> None:
    """An SSRF that can only send plain requests reaches no route, /v1 included; with a
    token every route answers; a wrong token is refused in either mode."""
    service = await started(tmp_path, **{"ec2.tokens": "required"})
    body = "state=configured" if method == "POST" else None
    form = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    try:
        status, _, _ = await fetch(service, path, method=method, data=body, headers=form)
        assert status == 401
        _, token, _ = await fetch(
            service,
            "/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        auth = {"X-aws-ec2-metadata-token": token, **form}
        status, _, _ = await fetch(service, path, method=method, data=body, headers=auth)
        assert status in (200, 204)
        bad = {**auth, "X-aws-ec2-metadata-token": token[:-2] + "xx"}
        assert (await fetch(service, path, method=method, data=body, headers=bad))[0] == 401
    finally:
        await service.stop()


async def test_optional_tokens_refuse_a_wrong_token_anywhere(svc: MetadataService) -> None:
    assert (await fetch(svc, "/v1/config.txt"))[0] == 200
    bad = {"X-aws-ec2-metadata-token": "99999999999.forged"}
    assert (await fetch(svc, "/v1/config.txt", headers=bad))[0] == 401
    assert (await fetch(svc, "/nocloud/meta-data", headers=bad))[0] == 401


# --- change notification -----------------------------------------------------------------


async def test_wait_for_change_holds_until_the_document_changes(svc: MetadataService) -> None:
    status, text, headers = await fetch(svc, "/v1/config")
    assert status == 200, text
    etag = headers["ETag"]
    loop = asyncio.get_running_loop()

    async def change_later() -> None:
        await asyncio.sleep(0.3)
        assert svc.registry is not None
        await svc.registry.patch(mac_of(1), {"metadata": {"role": "db"}})

    task = asyncio.create_task(change_later())
    started_at = loop.time()
    status, text, new_headers = await fetch(
        svc, f"/v1/config?wait_for_change=true&last_etag={etag.strip(chr(34))}&timeout_sec=10"
    )
    await task
    assert status == 200 and json.loads(text)["metadata"] == {"role": "db"}
    assert new_headers["ETag"] != etag and loop.time() - started_at >= 0.25

    started_at = loop.time()
    status, _, same = await fetch(
        svc, f"/v1/config?wait_for_change=true&last_etag={new_headers['ETag']}&timeout_sec=0.3"
    )
    assert (
        status == 200 and same["ETag"] == new_headers["ETag"] and loop.time() - started_at >= 0.25
    )
    status, _, _ = await fetch(
        svc, "/v1/config?wait_for_change=true&last_etag=stale&timeout_sec=30"
    )
    assert status == 200, "a stale ETag answers at once"


@pytest.mark.parametrize(
    "query",
    [
        "wait_for_change=maybe",
        "wait_for_change=true&timeout_sec=9999",
        "wait_for_change=true&timeout_sec=x",
        "colour=red",
    ],
    ids=["bad-flag", "timeout-too-long", "timeout-not-number", "unknown-param"],
)
async def test_bad_wait_parameters(svc: MetadataService, query: str) -> None:
    status, text, _ = await fetch(svc, f"/v1/config?{query}")
    assert status == 400 and json.loads(text)["detail"]


# --- rate limits -------------------------------------------------------------------------


async def test_a_flooding_guest_is_limited_and_others_are_not(tmp_path: Path) -> None:
    service = await started(tmp_path, **{"guest.rate_limit": 5.0, "guest.rate_burst": 20})
    try:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=16)  # its cap
        quiet = aiohttp.TCPConnector(local_addr=("127.0.0.1", 0))
        base = service.guest_addresses[0].url
        async with (
            aiohttp.ClientSession(connector=connector) as flood,
            aiohttp.ClientSession(connector=quiet) as other,
        ):

            async def hit(session: aiohttp.ClientSession, path: str) -> tuple[int, str | None]:
                async with session.get(base + path) as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After")

            async def quiet_guest() -> list[tuple[int, float]]:
                results = []
                for _ in range(8):  # 16 in all: within its own burst of 20
                    started = time.perf_counter()
                    status, _ = await hit(other, "/latest/meta-data/instance-id")
                    results.append((status, time.perf_counter() - started))
                return results

            alone = await quiet_guest()
            # The other guest asks while the flood is going on, not after it.
            flooded, during = await asyncio.gather(
                asyncio.gather(*(hit(flood, "/latest/meta-data/") for _ in range(400))),
                quiet_guest(),
            )
        statuses = [status for status, _ in flooded]
        assert statuses.count(200) >= 20 and statuses.count(429) >= 300
        assert all(retry and int(retry) >= 1 for status, retry in flooded if status == 429)
        assert [status for status, _ in alone + during] == [200] * 16, (
            "the quiet guest is never refused"
        )
        print(
            f"\nquiet guest, median request: {statistics.median(t for _, t in alone) * 1000:.2f} ms alone, "
            f"{statistics.median(t for _, t in during) * 1000:.2f} ms during a 400-request flood "
            f"from another guest ({statuses.count(429)} of its requests refused)"
        )
    finally:
        await service.stop()


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nothing/here", 404),
        ("GET", "/latest/meta-data/no-such-key", 404),
        ("GET", "/latest/meta-data/../../latest/user-data", 404),
        ("GET", "/latest/meta-data/./instance-id", 404),
        ("GET", f"/latest/meta-data/network/interfaces/macs/{mac_of(2)}/local-ipv4s", 404),
        ("GET", "/latest/meta-data/network/interfaces/macs/..%2F..%2Fuser-data", 404),
        ("GET", "/openstack/1999-01-01/meta_data.json", 404),
        ("GET", "/openstack/latest/../../latest/user-data", 404),
        ("GET", "/nocloud/../latest/user-data", 404),
        ("POST", "/latest/meta-data/instance-id", 405),
        ("DELETE", "/v1/config", 405),
    ],
    ids=[
        "unknown", "unknown-key", "dotdot", "dot", "other-mac",
        "encoded-slash", "unknown-openstack-version", "openstack-dotdot", "nocloud-dotdot",
        "post", "delete",
    ],
)  # fmt: skip
async def test_bad_paths_reveal_nothing(
    svc: MetadataService, method: str, path: str, status: int
) -> None:
    got, text, headers = await fetch(svc, path, method=method)
    assert got == status
    assert mac_of(2) not in text and "guest2" not in text and "echo hi" not in text
    if got == 404 and not path.startswith("/v1"):
        assert headers["Content-Type"].startswith("text/plain")


async def raw_request(
    service: MetadataService,
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    source: str = "127.0.0.1",
) -> tuple[int, str, CIMultiDict[str]]:
    """One request with `target` sent exactly as written (no client normalises it)."""
    host, port = service.guest_addresses[0].url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"Content-Length: {len(body)}"] if body else []
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = CIMultiDict(tuple(line.split(": ", 1)) for line in header_lines)
    return int(status_line.split()[1]), payload.decode(), parsed  # type: ignore[arg-type]


# (as a real client sends it, the same resource written canonically)
SLASH_FORMS = [
    ("//latest/meta-data/instance-id", "/latest/meta-data/instance-id", "ec2-leading"),
    ("/latest//meta-data/instance-id", "/latest/meta-data/instance-id", "ec2-after-version"),
    ("/latest/meta-data//instance-id", "/latest/meta-data/instance-id", "ec2-before-leaf"),
    ("/latest/meta-data/instance-id//", "/latest/meta-data/instance-id", "ec2-leaf-double-trailing"),
    ("///latest///meta-data///instance-id", "/latest/meta-data/instance-id", "ec2-triple-everywhere"),
    ("/latest/meta-data/instance-id/", "/latest/meta-data/instance-id", "ec2-leaf-trailing"),
    ("/latest/meta-data/placement/availability-zone/", "/latest/meta-data/placement/availability-zone", "ec2-az-trailing"),
    ("/latest/user-data/", "/latest/user-data", "ec2-user-data-trailing"),
    ("//latest/user-data", "/latest/user-data", "ec2-user-data-leading"),
    ("/latest/meta-data/public-keys//0//openssh-key/", "/latest/meta-data/public-keys/0/openssh-key", "ec2-key-doubled"),
    ("/2021-03-23//meta-data/local-ipv4", "/2021-03-23/meta-data/local-ipv4", "ec2-dated-version"),
    ("/latest/meta-data", "/latest/meta-data/", "ec2-dir-no-trailing"),
    ("//latest/meta-data//", "/latest/meta-data/", "ec2-dir-doubled"),
    ("/latest/meta-data/block-device-mapping//", "/latest/meta-data/block-device-mapping/", "ec2-subdir-doubled"),
    ("//latest//", "/latest/", "ec2-version-root-doubled"),
    ("/latest", "/latest/", "ec2-version-root-bare"),
    ("//", "/", "root-double"),
    ("///", "/", "root-triple"),
    ("//openstack/latest/meta_data.json", "/openstack/latest/meta_data.json", "openstack-leading"),
    ("/openstack//latest/meta_data.json", "/openstack/latest/meta_data.json", "openstack-after-prefix"),
    ("/openstack/latest//meta_data.json", "/openstack/latest/meta_data.json", "openstack-before-leaf"),
    ("/openstack/latest/meta_data.json/", "/openstack/latest/meta_data.json", "openstack-leaf-trailing"),
    ("/openstack/2018-08-27/user_data/", "/openstack/2018-08-27/user_data", "openstack-user-data-trailing"),
    ("//openstack//", "/openstack", "openstack-versions-doubled"),
    ("/openstack/latest//", "/openstack/latest/", "openstack-version-dir-doubled"),
    ("//nocloud/meta-data", "/nocloud/meta-data", "nocloud-leading"),
    ("/nocloud//meta-data", "/nocloud/meta-data", "nocloud-after-prefix"),
    ("/nocloud/user-data/", "/nocloud/user-data", "nocloud-leaf-trailing"),
    ("/nocloud//", "/nocloud/", "nocloud-dir-doubled"),
    ("//v1/config.txt", "/v1/config.txt", "v1-leading"),
    ("/v1//config.txt", "/v1/config.txt", "v1-after-prefix"),
    ("/v1/config.txt/", "/v1/config.txt", "v1-leaf-trailing"),
    ("//v1//config//", "/v1/config", "v1-config-everywhere"),
    ("/v1/user-data/", "/v1/user-data", "v1-user-data-trailing"),
    ("//v1/config?wait_for_change=false", "/v1/config", "v1-with-query"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("target", "canonical"), [f[:2] for f in SLASH_FORMS], ids=[f[2] for f in SLASH_FORMS]
)
async def test_doubled_and_trailing_slashes_are_served_as_imds_does(
    svc: MetadataService, target: str, canonical: str
) -> None:
    """Real IMDS ignores empty segments and serves a file asked for with a trailing
    slash: every form answers exactly what the canonical path answers."""
    expected = await raw_request(svc, canonical)
    assert expected[0] == 200 and expected[1]
    status, body, headers = await raw_request(svc, target)
    assert (status, body) == expected[:2]
    assert headers["Content-Type"] == expected[2]["Content-Type"]


async def test_slash_forms_of_the_token_and_status_routes(svc: MetadataService) -> None:
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    status, token, _ = await raw_request(svc, "//latest//api/token/", method="PUT", headers=ttl)
    assert status == 200 and token
    status, text, _ = await raw_request(
        svc, "//latest/meta-data/mac/", headers={"X-aws-ec2-metadata-token": token}
    )
    assert (status, text) == (200, mac_of(1))
    assert (await raw_request(svc, "//2021-03-23/api/token", method="PUT", headers=ttl))[0] == 403
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, _ = await raw_request(
        svc, "//v1//status/", method="POST", headers=form, body=b"state=configured"
    )
    assert status == 204
    vm = await svc.store.get(mac_of(1))
    assert vm is not None and vm.state.value == "configured"
    # A method the route does not take is still 405, whatever the slashes.
    status, _, headers = await raw_request(svc, "//latest/meta-data/instance-id/", method="POST")
    assert status == 405 and "GET" in headers["Allow"]


TRAVERSALS = [
    ("/latest/meta-data%2Finstance-id", "encoded-slash-upper"),
    ("/latest/meta-data%2finstance-id", "encoded-slash-lower"),
    ("/latest%2Fmeta-data%2Finstance-id", "encoded-slash-after-version"),
    ("//latest//meta-data%2F/instance-id/", "encoded-slash-among-doubled"),
    ("/v1%2Fconfig", "encoded-slash-v1"),
    ("/nocloud%2Fmeta-data", "encoded-slash-nocloud"),
    ("/latest/meta-data/%2e%2e/user-data", "encoded-dotdot"),
    ("/latest/meta-data/%2E%2E/%2E%2E/latest/user-data", "encoded-dotdot-upper"),
    ("//latest//meta-data//..//..//latest//user-data//", "dotdot-among-doubled"),
    ("/latest/meta-data/./instance-id/", "dot-trailing"),
    ("/latest/%2e/meta-data/instance-id", "encoded-dot"),
    ("/%2e%2e/latest/user-data", "dotdot-as-version"),
    ("/openstack/latest/%2e%2e/%2e%2e/latest/user-data", "openstack-encoded-dotdot"),
    ("/openstack//..//latest/user-data", "openstack-dotdot-doubled"),
    ("/nocloud/%2e%2e/latest/user-data", "nocloud-encoded-dotdot"),
    ("/nocloud//..//latest//user-data", "nocloud-dotdot-doubled"),
    ("/v1/%2e%2e/v1/config", "v1-encoded-dotdot"),
    (f"//latest/meta-data/network/interfaces/macs/{mac_of(2)}//local-ipv4s/", "other-mac-doubled"),
    ("/latest/meta-data/instance-id%00", "nul"),
    ("/latest/meta-data/instance-id%252f", "double-encoded-slash"),
]  # fmt: skip


@pytest.mark.parametrize("target", [t for t, _ in TRAVERSALS], ids=[i for _, i in TRAVERSALS])
async def test_traversal_forms_stay_404(svc: MetadataService, target: str) -> None:
    status, text, _ = await raw_request(svc, target)
    assert status == 404
    assert mac_of(2) not in text and "echo hi" not in text and "127.0.0.2" not in text


async def test_head_works_wherever_get_does(svc: MetadataService) -> None:
    for path in (
        "/",
        "/latest/meta-data/",
        "/openstack/latest/meta_data.json",
        "/nocloud/meta-data",
        "/v1/config",
    ):
        status, body, headers = await fetch(svc, path, method="HEAD")
        assert status == 200 and body == "" and int(headers["Content-Length"]) > 0, path


@pytest.mark.parametrize(
    "headers",
    [{"X-Big": "a" * 20000}, {"X-Many-" + str(n): "v" for n in range(200)}],
    ids=["oversized-header", "too-many-headers"],
)
async def test_oversized_headers_are_400(svc: MetadataService, headers: dict[str, str]) -> None:
    reader, writer = await asyncio.open_connection(
        *svc.guest_addresses[0].url.removeprefix("http://").split(":")
    )
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1] in (b"400", b"431")


async def test_malformed_request_line_is_400(svc: MetadataService) -> None:
    reader, writer = await asyncio.open_connection(
        *svc.guest_addresses[0].url.removeprefix("http://").split(":")
    )
    writer.write(b"GET /latest/\x00meta HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1] == b"400"
