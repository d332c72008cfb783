"""A whole Dom0 for tests: `metadata-server serve` as a process inside a Dom0 namespace,
running dnsmasq on the bridge, with its admin API on a unix socket (which reaches across
network namespaces, where 127.0.0.1 would not)."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.server_process import ServerProcess
from tests.support.service import ADMIN_TOKEN


def dom0_config(tmp_path: Path, *, templates: Path | None = None, extra: str = "") -> Path:
    """A configuration for one Dom0: bridge br0 with 198.18.0.0/24, dnsmasq run by the
    server, DNS on 198.18.0.1, the guest API on 169.254.169.254:80."""
    # dnsmasq reads its files as its own user after start: the directory must be reachable.
    directory = Path("/tmp") / f"ms-dhcp-{tmp_path.name}"
    shutil.rmtree(directory, ignore_errors=True)
    atexit.register(shutil.rmtree, directory, True)  # not under tmp_path: removed at exit
    atexit.register(Path(f"{directory}.admin.sock").unlink, missing_ok=True)
    lines = [
        f'db = "{tmp_path}/registry.db"',
        'domain = "guests.internal"',
        'bridge = "br0"',
        "[guest]",
        'listen = ["169.254.169.254:80"]',
        "[admin]",
        f'listen = "unix:{directory}.admin.sock"',
        "[dhcp]",
        'daemon = "dnsmasq"',
        "manage = true",
        f'directory = "{directory}"',
        "debounce_ms = 50",
    ]
    if templates is not None:
        lines.append(f'templates = "{templates}"')
    lines += [
        "[dns]",  # the server's own responder, which DHCP then hands out to the guests
        'listen = ["198.18.0.1:53"]',
        "[[dhcp.subnets]]",
        'cidr = "198.18.0.0/24"',
        'gateway = "198.18.0.1"',
        'bridge = "br0"',
        'dns = ["198.18.0.1"]',
        "lease_time = 600",
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


async def admin_call(
    server: ServerProcess, method: str, path: str, body: object = None
) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    connector = aiohttp.UnixConnector(path=server.admin_url.removeprefix("unix:"))
    async with (
        aiohttp.ClientSession(headers=headers, connector=connector) as session,
        session.request(method, "http://admin" + path, json=body) as response,
    ):
        return response.status, await response.json()


async def wait_for_dhcp(server: ServerProcess, syncs_after: int) -> dict[str, object]:
    """The DHCP status once a sync after the `syncs_after`-th has finished."""
    deadline = time.monotonic() + 10
    status: object = None
    while time.monotonic() < deadline:
        _, status = await admin_call(server, "GET", "/api/v1/dhcp/status")
        assert isinstance(status, dict)
        if int(status["syncs"]) > syncs_after:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"no DHCP sync after {syncs_after}: {status}")


async def wait_for_state(
    server: ServerProcess, mac: str, state: str, timeout: float = 15
) -> dict[str, Any]:
    """The guest's record once it has reached `state` (it is among its state_times)."""
    deadline = time.monotonic() + timeout
    vm: object = None
    while time.monotonic() < deadline:
        _, vm = await admin_call(server, "GET", f"/api/v1/vms/{mac}")
        assert isinstance(vm, dict)
        if state in vm["state_times"]:
            return vm
        await asyncio.sleep(0.1)
    raise AssertionError(f"{mac} did not reach {state}: {vm}")
