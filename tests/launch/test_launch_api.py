"""`POST /api/v1/launch` and `POST /api/v1/launched/{name}/destroy` on a real server (the
xl stand-in as `iso.xl_command`, one DHCP subnet), and `metadata-server vm launch`,
`vm show` and `vm destroy` against it: bad input gets a clear 4xx (or 503 naming the
missing tool) and changes nothing; a launch streams a line per step; the guest's
`ami-id` is its master's id; the password read from stdin is never echoed."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.cloud.ec2 import image_id
from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions, guest_view
from metadata_server.images.record import read_master
from metadata_server.launch.boot import PVGRUB
from tests.launch.conftest import XL_DOMAINS, XlState, make_master
from tests.support.service import ADMIN_TOKEN, Api, make_settings
from tests.test_cli import cli

SUBNETS = [{"cidr": "198.18.0.0/29", "gateway": "198.18.0.1", "bridge": "xenbr0"}]


@pytest.fixture
async def server(tmp_path: Path, xl_state: XlState) -> AsyncIterator[MetadataService]:
    settings = make_settings(
        tmp_path,
        **{
            "dhcp.subnets": SUBNETS,
            "iso.xl_command": [sys.executable, str(XL_DOMAINS), str(xl_state.directory)],
        },
    )
    service = MetadataService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def api(server: MetadataService) -> AsyncIterator[Api]:
    assert server.admin_address is not None
    async with aiohttp.ClientSession() as session:
        yield Api(session, server.admin_address.url, ADMIN_TOKEN)


@pytest.fixture
def kernel(tmp_path: Path) -> str:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"kernel")
    return str(path)


@pytest.fixture
def image(tmp_path: Path) -> str:
    images = tmp_path / "images"
    images.mkdir()
    return str(make_master(images))


def launch_body(image: str, kernel: str, /, **changes: Any) -> dict[str, Any]:
    body = {"name": "web1", "image": image, "kernel": kernel, **changes}
    return {key: value for key, value in body.items() if value is not None}


async def streamed(
    server: MetadataService, body: dict[str, Any], *, leave_at: str | None = None
) -> list[dict[str, Any]]:
    """The lines of a streamed launch; with `leave_at`, the client leaves at that step."""
    assert server.admin_address is not None
    lines: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.admin_address.url + "/api/v1/launch",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Accept": "application/x-ndjson"},
        ) as response,
    ):
        async for line in response.content:
            lines.append(json.loads(line))
            if leave_at is not None and lines[-1].get("step") == leave_at:
                break
    return lines


@pytest.mark.parametrize(
    ("changes", "status", "field", "match"),
    [
        pytest.param({"name": "-bad-"}, 400, "name", "host name", id="bad-name"),
        pytest.param({"colour": "red"}, 400, "colour", "unknown field", id="unknown-field"),
        pytest.param({"memory": 1}, 400, "memory", "integer from", id="memory"),
        pytest.param({"vcpus": True}, 400, "vcpus", "integer from", id="vcpus-bool"),
        pytest.param({"wait": -1}, 400, "wait", "seconds", id="wait"),
        pytest.param({"image": "rel/path"}, 400, "image", "absolute", id="relative-image"),
        pytest.param({"ip": "10.0.0.9"}, 400, "ip", "outside every", id="outside-subnets"),
        pytest.param({"ip": "198.18.0.1/29"}, 400, "ip", "gateway", id="gateway"),
        pytest.param({"password": "a:b"}, 400, "password", "password must", id="password"),
        pytest.param({"kernel": None}, 503, None, "grub-xen-bin", id="no-pvgrub2"),
    ],
)
async def test_bad_launch_requests_change_nothing(
    api: Api,
    image: str,
    kernel: str,
    xl_state: XlState,
    changes: dict[str, Any],
    status: int,
    field: str | None,
    match: str,
) -> None:
    if changes.get("kernel", "") is None and PVGRUB.exists():
        pytest.skip("pvgrub2 is installed here")
    got, body = await api.post("/api/v1/launch", json=launch_body(image, kernel, **changes))
    assert (got, body["field"]) == (status, field), body
    assert match in body["detail"]
    assert "a:b" not in json.dumps(body)
    assert (await api.get("/api/v1/vms"))[1]["count"] == 0
    assert xl_state.domains() == []


async def test_not_a_master_and_a_taken_name(
    api: Api, image: str, kernel: str, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.qcow2"
    plain.write_bytes(b"not a master")
    status, body = await api.post("/api/v1/launch", json=launch_body(str(plain), kernel))
    assert (status, body["error"]) == (400, "image")
    status, body = await api.post("/api/v1/launch", json=launch_body(image, kernel))
    assert status == 201, body
    status, body = await api.post("/api/v1/launch", json=launch_body(image, kernel))
    assert (status, body["error"], body["field"]) == (409, "conflict", "name")


async def test_a_launch_streams_its_steps_and_destroy_undoes_it(
    api: Api, server: MetadataService, image: str, kernel: str, xl_state: XlState
) -> None:
    lines = await streamed(server, launch_body(image, kernel))
    steps = [line["step"] for line in lines if "step" in line]
    assert steps == ["directory", "register", "clone", "config", "create"]
    result = lines[-1]["result"]
    assert result["kernel"] == kernel
    assert "generated_password" in result
    mac = result["mac"]
    status, vm = await api.get(f"/api/v1/vms/{mac}")
    assert status == 200
    assert vm["launch"]["image_id"] == read_master(Path(image)).image_id
    assert server.registry is not None
    stored = await server.registry.get(mac)
    view = guest_view(stored, DocumentOptions(None, "http://169.254.169.254"))
    assert image_id(view, CloudOptions()) == vm["launch"]["image_id"]

    status, body = await api.post("/api/v1/launched/web1/destroy", json={})
    assert (status, body["record"], body["domain_destroyed"]) == (200, "deleted", True)
    assert xl_state.domains() == []
    status, body = await api.post("/api/v1/launched/web1/destroy")
    assert (status, body["error"]) == (409, "not_launched")


async def test_the_routes_need_the_token(api: Api, image: str, kernel: str) -> None:
    api.token = None
    assert (await api.post("/api/v1/launch", json=launch_body(image, kernel)))[0] == 401
    assert (await api.post("/api/v1/launched/web1/destroy"))[0] == 401


async def test_the_cli_launches_shows_and_destroys(
    server: MetadataService, image: str, kernel: str, xl_state: XlState
) -> None:
    assert server.admin_address is not None
    url = server.admin_address.url
    code, out, err = await cli(
        "vm", "launch", "web2", "--image", image, "--kernel", kernel, "--wait", "0.2",
        "--password-stdin", "--url", url, stdin="pw-from-stdin\n",
    )  # fmt: skip
    assert code == 0, err
    assert "... register: guest 00:16:3e:" in err
    assert "... create: xl create" in err
    assert "launched web2 (00:16:3e:" in out
    assert "reach it: ssh root@198.18.0.2 " in out  # .1 is the gateway
    assert "pw-from-stdin" not in out + err
    assert "generated root password" not in out
    mac = out.split("(", 1)[1].split(")", 1)[0]
    code, out, err = await cli("vm", "show", mac, "--url", url)
    assert code == 0, err
    assert "image:" in out and "xl config:" in out and "delta:" in out
    code, out, err = await cli("vm", "destroy", "web2", "--url", url)
    assert code == 0, err
    assert "destroyed web2: domain destroyed" in out
    code, out, err = await cli("vm", "destroy", "web2", "--url", url)
    assert code == 1
    assert "not launched by this Dom0" in err


async def test_a_client_that_goes_away_mid_launch_rolls_it_back(
    api: Api, server: MetadataService, image: str, kernel: str, xl_state: XlState
) -> None:
    xl_state.slow("create", 2)  # the client leaves while xl create runs: no progress line
    await streamed(server, launch_body(image, kernel), leave_at="create")
    for _ in range(100):
        await asyncio.sleep(0.1)
        if not (Path(server.settings.state_dir) / "launched" / "web1").exists():
            break
    assert (await api.get("/api/v1/vms"))[1]["count"] == 0
    assert not (Path(server.settings.state_dir) / "launched" / "web1").exists()
    assert xl_state.domains() == []
