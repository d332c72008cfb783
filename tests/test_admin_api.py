"""The admin API over real HTTP: every route, its errors, and that bad input changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.errors import Conflict
from metadata_server.passwords import verify_password
from tests.support.records import SAMPLE_HASH, guest_body, mac_of
from tests.support.service import ADMIN_TOKEN, Api, make_settings

MAC = mac_of(1)


async def stored_hash(service: MetadataService, mac: str) -> str | None:
    vm = await service.store.get(mac)
    assert vm is not None
    return vm.spec.password_hash


async def test_put_creates_with_generated_password_then_replace_keeps_it(
    admin: Api, service: MetadataService
) -> None:
    body = guest_body(1)
    del body["password_hash"]
    status, created = await admin.put(f"/api/v1/vms/{MAC}", json=body)
    assert status == 201
    password = created["generated_password"]
    assert len(password) == 24
    assert created["password_set"] is True
    assert "password_hash" not in created and "user_data" not in created
    hashed = await stored_hash(service, MAC)
    assert hashed is not None and verify_password(password, hashed)

    status, replaced = await admin.put(f"/api/v1/vms/{MAC}", json={**body, "hostname": "renamed"})
    assert status == 200
    assert "generated_password" not in replaced
    assert replaced["hostname"] == "renamed"
    assert replaced["instance_id"] == created["instance_id"]
    assert await stored_hash(service, MAC) == hashed, "a replace without password keeps the hash"


async def test_put_with_plain_password_stores_only_its_hash(
    admin: Api, service: MetadataService
) -> None:
    body = guest_body(1, password="correct horse", password_hash=None)
    status, created = await admin.put(f"/api/v1/vms/{MAC}", json=body)
    assert status == 201
    assert "generated_password" not in created
    hashed = await stored_hash(service, MAC)
    assert hashed is not None and hashed.startswith("$6$")
    assert verify_password("correct horse", hashed)


async def test_get_list_filter_patch_delete(admin: Api) -> None:
    for n in (1, 2, 3):
        assert (
            await admin.put(f"/api/v1/vms/{mac_of(n)}", json=guest_body(n, host=f"dom0-{n % 2}"))
        )[0] == 201
    status, listing = await admin.get("/api/v1/vms")
    assert status == 200 and listing["count"] == 3
    assert [vm["mac"] for vm in listing["vms"]] == [mac_of(1), mac_of(2), mac_of(3)]
    status, listing = await admin.get("/api/v1/vms?host=dom0-1")
    assert [vm["mac"] for vm in listing["vms"]] == [mac_of(1), mac_of(3)]
    status, listing = await admin.get("/api/v1/vms?state=registered")
    assert listing["count"] == 3

    status, one = await admin.get(f"/api/v1/vms/{mac_of(2).upper().replace(':', '-')}")
    assert status == 200 and one["mac"] == mac_of(2)

    status, patched = await admin.patch(
        f"/api/v1/vms/{mac_of(2)}", json={"metadata": {"role": "db"}, "dns": None}
    )
    assert status == 200
    assert patched["metadata"] == {"role": "db"} and patched["dns"] == []
    assert patched["hostname"] == "guest2"

    assert (await admin.delete(f"/api/v1/vms/{mac_of(2)}"))[0] == 204
    assert (await admin.get(f"/api/v1/vms/{mac_of(2)}"))[0] == 404
    assert (await admin.delete(f"/api/v1/vms/{mac_of(2)}"))[0] == 404
    assert (await admin.patch(f"/api/v1/vms/{mac_of(2)}", json={"hostname": "x"}))[0] == 404


async def test_user_data_is_readable_by_the_admin_only_on_its_own_route(admin: Api) -> None:
    await admin.put(f"/api/v1/vms/{MAC}", json=guest_body(1, user_data="#cloud-config\n"))
    status, one = await admin.get(f"/api/v1/vms/{MAC}")
    assert one["user_data_bytes"] == len("#cloud-config\n") and "user_data" not in one
    status, raw = await admin.get(f"/api/v1/vms/{MAC}/user-data")
    assert status == 200 and raw == b"#cloud-config\n"


async def test_import_json_and_ndjson(admin: Api, service: MetadataService) -> None:
    rows = [{"mac": mac_of(n), **guest_body(n)} for n in range(1, 6)]
    del rows[0]["password_hash"]
    status, result = await admin.post("/api/v1/vms/import", json=rows)
    assert status == 200
    assert result["created"] == 5 and result["updated"] == 0
    assert list(result["generated_passwords"]) == [mac_of(1)]

    ndjson = (
        "\n".join(json.dumps({"mac": mac_of(n), **guest_body(n)}) for n in range(4, 8)) + "\n\n"
    )
    status, result = await admin.post(
        "/api/v1/vms/import", data=ndjson, headers={"Content-Type": "application/x-ndjson"}
    )
    assert status == 200 and (result["created"], result["updated"]) == (2, 2)
    assert len(await service.store.list()) == 7


async def test_import_lists_every_bad_row_and_stores_nothing(
    admin: Api, service: MetadataService
) -> None:
    rows: list[Any] = [{"mac": mac_of(n), **guest_body(n)} for n in range(1, 6)]
    rows[1]["hostname"] = "bad_name"
    rows[3]["ipv4"] = {"address": "198.18.0.1.1", "prefix": 24}
    rows.append("not an object")
    status, body = await admin.post("/api/v1/vms/import", json=rows)
    assert status == 400
    assert body["error"] == "invalid"
    assert [(r["index"], r["field"]) for r in body["rows"]] == [
        (1, "hostname"),
        (3, "ipv4.address"),
        (5, None),
    ]
    assert await service.store.list() == []


async def test_import_clash_is_409_with_rows(admin: Api, service: MetadataService) -> None:
    await admin.put(f"/api/v1/vms/{mac_of(1)}", json=guest_body(1))
    rows = [{"mac": mac_of(n), **guest_body(n)} for n in range(2, 5)]
    rows[2]["ipv4"] = guest_body(1)["ipv4"]
    status, body = await admin.post("/api/v1/vms/import", json=rows)
    assert status == 409
    assert body["rows"][0]["index"] == 2 and body["rows"][0]["field"] == "ipv4.address"
    assert len(await service.store.list()) == 1


async def test_rearm_gives_new_instance_and_registered_state(
    admin: Api, service: MetadataService
) -> None:
    _, created = await admin.put(f"/api/v1/vms/{MAC}", json=guest_body(1))
    assert service.registry is not None
    from metadata_server.model import State

    await service.registry.set_state(MAC, State.CONFIGURED, "done")
    status, rearmed = await admin.post(f"/api/v1/vms/{MAC}/rearm")
    assert status == 200
    assert rearmed["state"] == "registered"
    assert rearmed["instance_id"] != created["instance_id"]
    assert list(rearmed["state_times"]) == ["registered"]
    assert not rearmed["instance_id"].startswith("ec2")


async def test_status_long_polls_until_the_state_changes(
    admin: Api, service: MetadataService
) -> None:
    await admin.put(f"/api/v1/vms/{MAC}", json=guest_body(1))
    status, now = await admin.get(f"/api/v1/vms/{MAC}/status")
    assert status == 200 and now["state"] == "registered"

    async def later() -> None:
        await asyncio.sleep(0.3)
        assert service.registry is not None
        from metadata_server.model import State

        await service.registry.set_state(MAC, State.CONFIGURED, "applied")

    task = asyncio.create_task(later())
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, changed = await admin.get(f"/api/v1/vms/{MAC}/status?wait=10")
    await task
    assert status == 200 and changed["state"] == "configured" and changed["message"] == "applied"
    assert 0.2 < loop.time() - started < 5

    started = loop.time()
    status, same = await admin.get(f"/api/v1/vms/{MAC}/status?wait=0.3")
    assert same["state"] == "configured" and loop.time() - started >= 0.25


async def test_events_stream_reports_changes(admin: Api, service: MetadataService) -> None:
    assert service.admin_address is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            service.admin_address.url + "/api/v1/events",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as stream,
    ):
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert (await stream.content.readline()).startswith(b": connected")
        await stream.content.readline()
        await admin.put(
            f"/api/v1/vms/{MAC}", json=guest_body(1, password="pw-in-event", password_hash=None)
        )
        await admin.delete(f"/api/v1/vms/{MAC}")
        lines: list[bytes] = []
        while len([line for line in lines if line.startswith(b"event:")]) < 2:
            lines.append(await asyncio.wait_for(stream.content.readline(), 5))
    text = b"".join(lines).decode()
    assert "event: created" in text and "event: deleted" in text
    assert "pw-in-event" not in text and "$6$" not in text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, 401),
        ({"Authorization": ADMIN_TOKEN}, 401),
    ],
    ids=["none", "wrong", "not-bearer"],
)
async def test_token_is_required(
    service: MetadataService, headers: dict[str, str], status: int
) -> None:
    assert service.admin_address is not None
    async with aiohttp.ClientSession() as session:
        api = Api(session, service.admin_address.url, None)
        got, body = await api.get("/api/v1/vms", headers=headers)
        assert got == status and body["error"] == "unauthorized"
        got, body = await api.put(f"/api/v1/vms/{MAC}", json=guest_body(1), headers=headers)
        assert got == status
        assert (await api.get("/healthz"))[0] == 200
        assert (await api.get("/api/v1/openapi.json"))[0] == 200
    assert await service.store.list() == []


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str | None]] = [
    (
        "malformed-json",
        {"data": b'{"hostname": ', "headers": {"Content-Type": "application/json"}},
        400,
        None,
    ),
    (
        "non-utf8",
        {"data": b'{"hostname": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}},
        400,
        None,
    ),
    (
        "nan",
        {"data": b'{"hostname": NaN}', "headers": {"Content-Type": "application/json"}},
        400,
        None,
    ),
    ("array-body", {"json": [guest_body(1)]}, 400, None),
    ("wrong-type", {"json": {**guest_body(1), "dns": "198.18.0.1"}}, 400, "dns"),
    ("unknown-field", {"json": {**guest_body(1), "root": True}}, 400, "root"),
    ("bad-hash", {"json": {**guest_body(1), "password_hash": "plain"}}, 400, "password_hash"),
    ("bad-key", {"json": {**guest_body(1), "ssh_keys": ["ssh-rsa nope"]}}, 400, "ssh_keys[0]"),
    (
        "too-large",
        {"data": b"{" + b" " * (1 << 20) + b"}", "headers": {"Content-Type": "application/json"}},
        413,
        None,
    ),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [(k, s, f) for _, k, s, f in BAD_REQUESTS],
    ids=[i for i, _, _, _ in BAD_REQUESTS],
)
async def test_bad_put_changes_nothing(
    admin: Api,
    service: MetadataService,
    request_kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    got, body = await admin.put(f"/api/v1/vms/{MAC}", **request_kwargs)
    assert got == status
    assert set(body) >= {"error", "field", "detail"}
    if field is not None:
        assert body["field"] == field
    assert await service.store.list() == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/vms/not-a-mac", 400),
        ("/api/v1/vms?colour=blue", 400),
        ("/api/v1/vms?state=sleeping", 400),
        (f"/api/v1/vms/{MAC}/status?wait=9999", 400),
        (f"/api/v1/vms/{MAC}/status?wait=soon", 400),
        ("/api/v1/nothing", 404),
    ],
    ids=[
        "bad-mac",
        "unknown-param",
        "bad-state",
        "wait-too-long",
        "wait-not-number",
        "unknown-route",
    ],
)
async def test_bad_reads_are_clear(admin: Api, path: str, status: int) -> None:
    await admin.put(f"/api/v1/vms/{MAC}", json=guest_body(1))
    got, body = await admin.get(path)
    assert got == status and body["detail"]


async def test_wrong_method_is_405_json(admin: Api) -> None:
    got, body = await admin.post(f"/api/v1/vms/{MAC}")
    assert got == 405 and body["error"] == "method_not_allowed"


async def test_clash_names_field_and_holder(admin: Api, service: MetadataService) -> None:
    await admin.put(f"/api/v1/vms/{mac_of(1)}", json=guest_body(1))
    got, body = await admin.put(
        f"/api/v1/vms/{mac_of(2)}", json=guest_body(2, ipv4=guest_body(1)["ipv4"])
    )
    assert got == 409
    assert body["field"] == "ipv4.address" and body["holder"] == mac_of(1)
    got, body = await admin.put(f"/api/v1/vms/{mac_of(2)}", json=guest_body(2, hostname="guest1"))
    assert got == 409 and body["field"] == "hostname"
    assert [vm.mac for vm in await service.store.list()] == [mac_of(1)]


async def test_password_hash_is_never_in_a_response(admin: Api) -> None:
    await admin.put(f"/api/v1/vms/{MAC}", json=guest_body(1))
    for path in ("/api/v1/vms", f"/api/v1/vms/{MAC}", f"/api/v1/vms/{MAC}/status"):
        _, body = await admin.get(path)
        assert SAMPLE_HASH not in json.dumps(body)


async def test_the_default_domain_spelled_out_is_the_same_name(tmp_path: Path) -> None:
    service = MetadataService(make_settings(tmp_path, domain="guests.internal"))
    await service.start()
    try:
        assert service.registry is not None
        await service.registry.put(mac_of(1), guest_body(1, hostname="web"))
        with pytest.raises(Conflict) as error:
            await service.registry.put(
                mac_of(2), guest_body(2, hostname="web", domain="guests.internal")
            )
        assert error.value.field == "hostname" and error.value.holder == mac_of(1)
        result = await service.registry.put(
            mac_of(3), guest_body(3, hostname="web", domain="other.internal")
        )
        assert result.vm.spec.domain == "other.internal"
    finally:
        await service.stop()


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {ADMIN_TOKEN}",
        f"bearer {ADMIN_TOKEN}",
        f"BEARER {ADMIN_TOKEN}",
        f"bEaReR {ADMIN_TOKEN}",
        f"Bearer   {ADMIN_TOKEN}",
    ],
    ids=["canonical", "lower", "upper", "mixed", "several-spaces"],
)
async def test_bearer_scheme_is_case_insensitive(
    service: MetadataService, authorization: str
) -> None:
    assert service.admin_address is not None
    async with aiohttp.ClientSession() as session:
        api = Api(session, service.admin_address.url, None)
        got, _ = await api.get("/api/v1/vms", headers={"Authorization": authorization})
        assert got == 200


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {ADMIN_TOKEN.upper()}",
        f"Basic {ADMIN_TOKEN}",
        f"Bearer{ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN} extra",
        f"Bearerx {ADMIN_TOKEN}",
        "Bearer",
        "Bearer ",
    ],
    ids=[
        "token-case",
        "other-scheme",
        "no-space",
        "trailing-word",
        "longer-scheme",
        "no-token",
        "empty-token",
    ],
)
async def test_bearer_token_itself_is_exact(service: MetadataService, authorization: str) -> None:
    assert service.admin_address is not None
    async with aiohttp.ClientSession() as session:
        api = Api(session, service.admin_address.url, None)
        got, body = await api.get("/api/v1/vms", headers={"Authorization": authorization})
        assert got == 401 and body["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/api/v1/vms/import", 405, "POST"),
        ("PUT", "/api/v1/vms/import", 405, "POST"),
        ("DELETE", "/api/v1/vms/import", 405, "POST"),
        ("PATCH", "/api/v1/vms/import", 405, "POST"),
        ("OPTIONS", "/api/v1/vms/import", 204, "POST"),
        ("OPTIONS", f"/api/v1/vms/{MAC}", 204, "GET, HEAD, PUT, PATCH, DELETE"),
        ("OPTIONS", "/api/v1/vms", 204, "GET, HEAD"),
        ("POST", f"/api/v1/vms/{MAC}", 405, "GET, HEAD, PUT, PATCH, DELETE"),
        ("DELETE", "/api/v1/vms", 405, "GET, HEAD"),
    ],
    ids=[
        "get-import",
        "put-import",
        "delete-import",
        "patch-import",
        "options-import",
        "options-vm",
        "options-list",
        "post-vm",
        "delete-list",
    ],
)
async def test_import_never_matches_a_mac_and_allow_is_exact(
    admin: Api, service: MetadataService, method: str, path: str, status: int, allow: str
) -> None:
    """GET /api/v1/vms/import used to reach GET /api/v1/vms/{mac} (400 "not a MAC")."""
    got, body = await admin.call(
        method, path, json=guest_body(1) if method in ("PUT", "PATCH") else None
    )
    assert got == status
    assert admin.session is not None
    async with admin.session.request(
        method, admin.base + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.headers["Allow"] == allow
    if status == 405:
        assert body["error"] == "method_not_allowed" and body["detail"]
    assert await service.store.list() == []


_IPV4 = '"ipv4": {"address": "198.18.0.11", "prefix": 24}'
DUPLICATE_KEYS = [
    pytest.param("put", f'{{"hostname": "a", "hostname": "b", {_IPV4}}}', id="top-level"),
    pytest.param(
        "put",
        '{"hostname": "a", "ipv4": {"address": "198.18.0.11", "address": "198.18.0.12", "prefix": 24}}',
        id="nested",
    ),
    pytest.param(
        "put", f'{{"hostname": "a", {_IPV4}, "metadata": {{"k": "1", "k": "2"}}}}', id="metadata"
    ),
    pytest.param("patch", '{"hostname": "a", "hostname": "b"}', id="patch"),
    pytest.param(
        "import",
        f'[{{"mac": "02:00:c6:12:00:01", "mac": "02:00:c6:12:00:02", "hostname": "a", {_IPV4}}}]',
        id="import-array",
    ),
    pytest.param(
        "import",
        f'{{"mac": "02:00:c6:12:00:01", "hostname": "a", "hostname": "b", {_IPV4}}}\n',
        id="import-ndjson",
    ),
    pytest.param("lease", '{"address": "198.18.0.11", "address": "198.18.0.99"}', id="lease"),
]


@pytest.mark.parametrize(("route", "body"), DUPLICATE_KEYS)
async def test_duplicate_json_keys_are_400_and_change_nothing(
    admin: Api, service: MetadataService, route: str, body: str
) -> None:
    """Before, the last of two equal keys silently won (json.loads' rule, not every
    parser's): the body meant two things."""
    other = mac_of(2)
    await admin.put(f"/api/v1/vms/{other}", json=guest_body(2))
    before = await service.store.list()
    path = {
        "put": f"/api/v1/vms/{MAC}",
        "patch": f"/api/v1/vms/{other}",
        "import": "/api/v1/vms/import",
        "lease": f"/api/v1/vms/{other}/lease",
    }[route]
    method = {"put": "PUT", "patch": "PATCH", "lease": "POST"}.get(route, "POST")
    got, answer = await admin.call(
        method, path, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert got == 400, answer
    assert answer["error"] == "invalid" and "appears twice" in answer["detail"]
    assert await service.store.list() == before


@pytest.mark.parametrize(
    ("prefix", "stored"),
    [
        pytest.param("24", 24, id="integer"),
        pytest.param("24.0", 24, id="zero-fraction"),
        pytest.param("2.4e1", 24, id="exponent"),
        pytest.param("24.5", None, id="fraction"),
        pytest.param("true", None, id="boolean"),
    ],
)
async def test_an_integral_json_number_is_an_integer(
    admin: Api, service: MetadataService, prefix: str, stored: int | None
) -> None:
    """JSON has one number type, and the OpenAPI document's JSON Schema counts 24.0 as
    the integer 24: a prefix written so is that prefix, not a 400."""
    body = f'{{"hostname": "g", "ipv4": {{"address": "198.18.0.11", "prefix": {prefix}}}}}'
    got, answer = await admin.put(
        f"/api/v1/vms/{MAC}", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    if stored is None:
        assert got == 400 and answer["field"] == "ipv4.prefix"
        assert await service.store.list() == []
    else:
        assert got == 201 and answer["ipv4"]["prefix"] == stored
