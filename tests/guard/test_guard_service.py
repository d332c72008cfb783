"""The bridge guard as a part of the server, in a Dom0 namespace with a bridge: one nft
transaction per burst of changes, the table back when someone removed it, the previous
rules kept (and reported) when the kernel refuses a batch, gone when the server stops;
a clear refusal to start without nft; the warning when it is turned off."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.config import Settings
from metadata_server.errors import ConfigError
from metadata_server.guard.nft import Nft
from tests.support.netns import BridgeNetwork, bridge_network, in_netns
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.service import ADMIN_TOKEN, make_settings, start_in_netns

REFUSING_NFT = Path(__file__).resolve().parents[1] / "support" / "nft-kernel-refuses"


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "nft")
    with bridge_network() as network:
        yield network


def settings(net: BridgeNetwork, tmp_path: Path, nft: str = "nft", **flags: object) -> Settings:
    """The server's settings; its nft runs in Dom0's namespace, as the server's sockets do
    (the test's own process stays in the host's)."""
    return make_settings(
        tmp_path,
        **{
            "bridge": "br0",
            "guard.guest_ports": ["vh*"],
            "guard.nft_command": net.dom0.argv(nft),
            "guest.listen": ["169.254.169.254:0"],
            "admin.listen": f"unix:{tmp_path}/admin.sock",  # reaches across namespaces
            **flags,
        },
    )


async def stop(service: MetadataService, net: BridgeNetwork) -> None:
    with in_netns(net.dom0.name):
        await service.stop()


def tables(net: BridgeNetwork) -> list[str]:
    listing = json.loads(net.dom0.run("nft", "-j", "list", "tables", "bridge"))
    return [item["table"]["name"] for item in listing["nftables"] if "table" in item]


def elements(net: BridgeNetwork, name: str) -> list[object]:
    listing = json.loads(
        net.dom0.run("nft", "-j", "list", "set", "bridge", "metadata_guard_br0", name)
    )
    return next(item["set"] for item in listing["nftables"] if "set" in item).get("elem", [])


async def settle(service: MetadataService, applies: int, timeout: float = 10) -> None:
    assert service.guard is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while service.guard.status.applies < applies and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)  # and nothing more comes


async def test_a_burst_of_registrations_is_one_transaction_and_stop_removes_the_table(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    service = await start_in_netns(settings(net, tmp_path), net.dom0.name)
    try:
        assert service.guard is not None
        assert tables(net) == ["metadata_guard_br0"]
        first = service.guard.status.applies
        assert service.registry is not None
        rows = [
            {
                **guest_body(n, ipv4={"address": f"198.18.{n // 250}.{n % 250 + 2}", "prefix": 16}),
                "mac": mac_of(n),
            }
            for n in range(1000)
        ]
        await service.registry.import_rows(rows)
        await settle(service, first + 1)
        assert service.guard.status.applies == first + 1, "1,000 guests, one nft run"
        assert len(elements(net, "macs")) == 1000
        for n in range(20):  # twenty quick changes, one at a time
            await service.registry.patch(
                mac_of(n), {"ipv4": {"address": f"198.18.9.{n + 2}", "prefix": 16}}
            )
        await settle(service, first + 2)
        assert service.guard.status.applies <= first + 3
    finally:
        await stop(service, net)
    assert tables(net) == []


async def test_a_stale_table_from_a_crash_is_replaced(net: BridgeNetwork, tmp_path: Path) -> None:
    net.dom0.run("nft", "add", "table", "bridge", "metadata_guard_br0")
    net.dom0.run(
        "nft", "add", "set", "bridge", "metadata_guard_br0", "leftover", "{ type ether_addr; }"
    )
    service = await start_in_netns(settings(net, tmp_path), net.dom0.name)
    try:
        listing = net.dom0.run("nft", "list", "table", "bridge", "metadata_guard_br0")
        assert "leftover" not in listing and "chain guest" in listing
    finally:
        await stop(service, net)


async def test_a_removed_table_comes_back(net: BridgeNetwork, tmp_path: Path) -> None:
    service = await start_in_netns(settings(net, tmp_path), net.dom0.name)
    try:
        assert service.registry is not None and service.guard is not None
        net.dom0.run("nft", "delete", "table", "bridge", "metadata_guard_br0")
        await service.registry.put(mac_of(1), guest_body(1))
        await settle(service, 2)
        assert service.guard.status.ok and elements(net, "macs") == [mac_of(1)]
    finally:
        await stop(service, net)


async def test_a_refused_update_keeps_the_rules_and_shows_in_healthz(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    service = await start_in_netns(settings(net, tmp_path), net.dom0.name)
    try:
        assert service.registry is not None and service.guard is not None
        await service.registry.put(mac_of(1), guest_body(1))
        await settle(service, 2)
        service.guard.nft = Nft(net.dom0.argv(str(REFUSING_NFT)))
        await service.registry.put(mac_of(2), guest_body(2))
        await asyncio.sleep(1.0)
        assert elements(net, "macs") == [mac_of(1)], "the previous rules stay in force"
        health = await admin_get(service, "/healthz")
        assert health["status"] == "degraded"
        assert "refused" in health["guard"]["error"]  # type: ignore[index]
        service.guard.nft = Nft(net.dom0.argv("nft"))  # so that stop can remove the table
    finally:
        await stop(service, net)


async def admin_get(service: MetadataService, path: str) -> dict[str, object]:
    assert service.admin_address is not None and service.admin_address.unix_path is not None
    connector = aiohttp.UnixConnector(path=service.admin_address.unix_path)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://admin" + path, headers=headers) as response,
    ):
        body: dict[str, object] = await response.json()
        return body


async def test_without_nft_the_server_refuses_to_start_and_says_how_to_turn_it_off(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'db = "{tmp_path}/r.db"\nbridge = "br0"\n[guest]\nlisten = ["169.254.169.254:0"]\n'
        f'[admin]\nlisten = "unix:{tmp_path}/a.sock"\n'
        '[guard]\nnft_command = ["/nonexistent/nft"]\n'  # as on a host without nftables
    )
    result = subprocess.run(
        net.dom0.argv(sys.executable, "-m", "metadata_server", "serve", "--config", str(config)),
        env={**os.environ, "METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "needs nft" in result.stderr and "guard.enabled = false" in result.stderr
    assert tables(net) == []


async def test_a_kernel_that_refuses_the_rules_stops_the_start(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    service = MetadataService(settings(net, tmp_path, nft=str(REFUSING_NFT)))
    with in_netns(net.dom0.name), pytest.raises(ConfigError, match=r"guard.enabled = false"):
        await service.start()
    assert tables(net) == []


async def test_turned_off_it_warns_in_the_log_and_in_healthz(
    net: BridgeNetwork, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_in_netns(
        settings(net, tmp_path, **{"guard.enabled": False}), net.dom0.name
    )
    try:
        assert tables(net) == []
        health = await admin_get(service, "/healthz")
        guard = health["guard"]
        assert isinstance(guard, dict) and guard["enabled"] is False and "warning" in guard
        assert "bridge guard is off" in caplog.text
        assert (await admin_get(service, "/api/v1/guard"))["enabled"] is False
    finally:
        await stop(service, net)
