"""The ISO fallback's admin routes (GET .../iso, POST .../iso-provision) on a real server
on port 0, their OpenAPI description, and the `iso build` / `iso provision` commands run
as real subprocesses against it. The guest is played by the real xenstore-write."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pycdlib
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from metadata_server.http import iso as iso_http
from metadata_server.http.admin import PUBLIC_PATHS
from metadata_server.http.keys import REGISTRY, SETTINGS
from metadata_server.http.middleware import bearer_auth, json_errors
from metadata_server.http.openapi import openapi_document
from metadata_server.model import State
from tests.iso.conftest import World
from tests.iso.test_provision import KEY, guest_writes, read_nonce
from tests.support.records import guest_body, mac_of
from tests.support.service import ADMIN_TOKEN

MAC = mac_of(1)


async def serve(world: World | None, *, provisioner: bool = True) -> tuple[web.AppRunner, str]:
    app = web.Application(middlewares=[json_errors, bearer_auth(ADMIN_TOKEN, PUBLIC_PATHS)])
    iso_http.add_routes(app)
    if world is not None:
        app[REGISTRY] = world.registry
        app[SETTINGS] = world.service.settings
        if provisioner:
            app[iso_http.PROVISIONER] = world.provisioner
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def api(world: World) -> AsyncIterator[str]:
    await world.registry.put(MAC, guest_body(1, user_data="#!/bin/sh\necho hi\n"))
    world.vif(5, MAC)
    runner, url = await serve(world)
    try:
        yield url
    finally:
        await runner.cleanup()


async def call(
    method: str, url: str, *, token: str | None = ADMIN_TOKEN, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, **kwargs) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def iso_file(data: bytes, path: str) -> tuple[str, bytes]:
    """(volume label, content of `path`) of an ISO image in memory."""
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(data))
    out = io.BytesIO()
    image.get_file_from_iso_fp(out, rr_path=path)
    label = image.pvd.volume_identifier.decode().strip()
    image.close()
    return label, out.getvalue()


# --- GET /api/v1/vms/{mac}/iso ------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "label", "path"),
    [
        ("", "cidata", "/meta-data"),
        ("?layout=configdrive", "config-2", "/openstack/latest/user_data"),
    ],
    ids=["nocloud", "configdrive"],
)
async def test_get_iso(world: World, api: str, query: str, label: str, path: str) -> None:
    before = await world.registry.get(MAC)
    status, headers, body = await call("GET", f"{api}/api/v1/vms/02-00-C6-12-00-01/iso{query}")
    assert status == 200
    assert headers["Content-Type"] == "application/x-iso9660-image"
    assert headers["Content-Disposition"] == f'attachment; filename="02-00-c6-12-00-01-{label}.iso"'
    nonce = headers["X-Metadata-Init-Nonce"]
    assert re.fullmatch(r"[0-9a-f]{32}", nonce)
    found_label, content = iso_file(body, "/metadata-init.txt")
    assert found_label == label and f"\nnonce {nonce}\nend\n" in content.decode()
    assert iso_file(body, path)[1]
    assert await world.registry.get(MAC) == before  # changes nothing
    world.assert_nothing_left()


@pytest.mark.parametrize(
    ("path", "token", "status", "code"),
    [
        ("/api/v1/vms/02:00:c6:12:00:63/iso", ADMIN_TOKEN, 404, "not_found"),
        ("/api/v1/vms/nope/iso", ADMIN_TOKEN, 400, "invalid"),
        ("/api/v1/vms/02:00:c6:12:00:01/iso?layout=udf", ADMIN_TOKEN, 400, "invalid"),
        ("/api/v1/vms/02:00:c6:12:00:01/iso?size=1", ADMIN_TOKEN, 400, "invalid"),
        ("/api/v1/vms/02:00:c6:12:00:01/iso", None, 401, "unauthorized"),
        ("/api/v1/vms/02:00:c6:12:00:01/iso", "wrong-token", 401, "unauthorized"),
    ],
    ids=["unknown-mac", "bad-mac", "bad-layout", "unknown-parameter", "no-token", "bad-token"],
)
async def test_get_iso_refuses(
    api: str, path: str, token: str | None, status: int, code: str
) -> None:
    got, _, body = await call("GET", api + path, token=token)
    assert got == status
    assert json.loads(body)["error"] == code


# --- POST /api/v1/vms/{mac}/iso-provision ---------------------------------------------------


async def test_provision_route_answers_when_the_guest_is_configured(world: World, api: str) -> None:
    request = asyncio.create_task(
        call("POST", f"{api}/api/v1/vms/{MAC}/iso-provision", json={"timeout": 10})
    )
    nonce = read_nonce(await world.attached(5))
    assert await guest_writes(world, 5, f"{KEY}/done", nonce) == 0
    status, _, body = await asyncio.wait_for(request, 10)
    assert status == 200
    answer = json.loads(body)
    assert answer["state"] == "configured" and answer["domid"] == 5
    assert answer["layout"] == "nocloud" and answer["mac"] == MAC
    assert answer["message"] == "configured from the ISO on domain 5"
    world.assert_nothing_left()


@pytest.mark.parametrize(
    ("mac", "body", "status", "code", "state"),
    [
        (MAC, b"[1]", 400, "invalid", "registered"),
        (MAC, b"{", 400, "invalid", "registered"),
        (MAC, b'{"vdev": "xvde"}', 400, "invalid", "registered"),
        (MAC, b'{"timeout": 0}', 400, "invalid", "registered"),
        (MAC, b'{"layout": "udf"}', 400, "invalid", "registered"),
        ("02:00:c6:12:00:63", b"", 404, "not_found", "registered"),
        (MAC, b'{"domid": 6}', 400, "wrong_domain", "failed"),
        (MAC, b'{"domid": 9}', 400, "wrong_domain", "failed"),
        (MAC, b'{"timeout": 1}', 503, "xen_guest_timeout", "failed"),
    ],
    ids=[
        "not-an-object",
        "bad-json",
        "unknown-field",
        "zero-timeout",
        "bad-layout",
        "unknown-mac",
        "someone-elses-domain",
        "unknown-domain",
        "guest-silent",
    ],
)
async def test_provision_route_errors(
    world: World, api: str, mac: str, body: bytes, status: int, code: str, state: str
) -> None:
    got, _, answer = await call(
        "POST",
        f"{api}/api/v1/vms/{mac}/iso-provision",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert got == status, answer
    assert json.loads(answer)["error"] == code
    assert (await world.registry.get(MAC)).state is State(state)
    world.assert_nothing_left()


async def test_routes_without_the_fallback_configured(world: World) -> None:
    runner, url = await serve(world, provisioner=False)
    try:
        for method, path in (("GET", "iso"), ("POST", "iso-provision")):
            status, _, body = await call(method, f"{url}/api/v1/vms/{MAC}/{path}")
            assert status == 503 and "not configured" in json.loads(body)["detail"]
    finally:
        await runner.cleanup()


def test_openapi_describes_the_routes() -> None:
    app = web.Application()
    iso_http.add_routes(app)
    routes = set()
    for route in app.router.routes():
        if route.method != "HEAD":
            info = route.resource.get_info() if route.resource else {}
            routes.add((route.method.lower(), info.get("path") or info.get("formatter")))
    described = {
        (method, path)
        for path, item in iso_http.OPENAPI_PATHS.items()
        for method in item
        if method in ("get", "post")
    }
    assert routes == described
    document = openapi_document()
    document["paths"].update(iso_http.OPENAPI_PATHS)
    validate(document)


# --- the commands ------------------------------------------------------------------------


async def cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
    env["METADATA_SERVER_ADMIN_TOKEN"] = ADMIN_TOKEN
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "metadata_server",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("layout", ["nocloud", "configdrive"])
async def test_iso_build_command(world: World, api: str, tmp_path: Path, layout: str) -> None:
    out_file = tmp_path / "out" / "guest.iso"
    out_file.parent.mkdir()
    code, out, err = await cli(
        "iso", "build", "--url", api, "--mac", MAC, "--out", str(out_file), "--layout", layout
    )
    assert code == 0, err
    assert out.strip() == f"wrote {out_file} ({out_file.stat().st_size} bytes)"
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    label, _ = iso_file(out_file.read_bytes(), "/metadata-init.txt")
    assert label == {"nocloud": "cidata", "configdrive": "config-2"}[layout]
    assert sorted(p.name for p in out_file.parent.iterdir()) == ["guest.iso"]  # no partial


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--mac", "02:00:c6:12:00:63"), "no guest with MAC 02:00:c6:12:00:63"),
        (("--mac", MAC, "--out-dir-missing"), "unrecognized arguments"),
    ],
    ids=["unknown-mac", "bad-usage"],
)
async def test_iso_build_command_errors(
    api: str, tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    out_file = tmp_path / "guest.iso"
    code, out, err = await cli("iso", "build", "--url", api, "--out", str(out_file), *args)
    assert code in (1, 2) and out == ""
    assert words in err
    assert not out_file.exists()


async def test_iso_provision_command(world: World, api: str) -> None:
    command = asyncio.create_task(
        cli("iso", "provision", "--url", api, "--mac", MAC, "--timeout", "10")
    )
    nonce = read_nonce(await world.attached(5))
    assert await guest_writes(world, 5, f"{KEY}/done", nonce) == 0
    code, out, err = await command
    assert code == 0, err
    assert out.strip() == (
        f"{MAC}: configured (domain 5, nocloud): configured from the ISO on domain 5"
    )
    world.assert_nothing_left()


async def test_iso_provision_command_reports_the_failure(world: World, api: str) -> None:
    code, out, err = await cli("iso", "provision", "--url", api, "--mac", MAC, "--timeout", "1")
    assert code == 1 and out == ""
    assert err.startswith("metadata-server: domain 5 did not signal")
    assert "[HTTP 503]" in err
    vm = await world.registry.get(MAC)
    assert vm.state is State.FAILED
    world.assert_nothing_left()
