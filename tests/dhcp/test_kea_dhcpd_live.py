"""Kea and ISC dhcpd with the server's rendered files: a real Kea on the bridge gives a
guest its reservation, picks up a registry change by `config-reload` over its control
socket, and reports the lease through its run_script hook; a real dhcpd accepts the
rendered file (`dhcpd -t`) and gives the guest its reservation too."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dhcp_client import get_lease, install_script, option_text
from tests.support.dom0 import admin_call as admin
from tests.support.dom0 import wait_for_dhcp, wait_for_state
from tests.support.netns import BridgeNetwork, Netns, bridge_network
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

RUN_SCRIPT = Path("/usr/lib/x86_64-linux-gnu/kea/hooks/libdhcp_run_script.so")


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "busybox")
    with bridge_network() as network:
        yield network


def write_config(tmp_path: Path, daemon: str, extra: list[str]) -> Path:
    lines = [
        f'db = "{tmp_path}/registry.db"',
        "[guest]",
        'listen = ["198.18.0.1:8080"]',
        "[admin]",
        f'listen = "unix:{tmp_path}/admin.sock"',
        "[dhcp]",
        f'daemon = "{daemon}"',
        f'directory = "{tmp_path}/dhcp"',
        "debounce_ms = 50",
        *extra,
        "[[dhcp.subnets]]",
        'cidr = "198.18.0.0/24"',
        'gateway = "198.18.0.1"',
        'bridge = "br0"',
        'domain = "guests.internal"',
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def daemon_in(ns: Netns, argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = ns.popen(*argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("leases", ["file", "hook"])
async def test_kea_serves_reservations_and_reloads(
    net: BridgeNetwork, tmp_path: Path, leases: str
) -> None:
    """Leases are learned from Kea's memfile (no process per lease: Kea gets no hooks
    library, and nothing reports to the admin API), or from its run_script hook."""
    tools = need_tools("kea-dhcp4")
    if not RUN_SCRIPT.exists():
        need_tools(str(RUN_SCRIPT))
    extra = [
        f'kea_control_socket = "{tmp_path}/kea.sock"',
        f'kea_lease_file = "{tmp_path}/kea-leases.csv"',
        f'kea_hooks_library = "{RUN_SCRIPT}"',
        f'leases = "{leases}"',
    ]
    config = write_config(tmp_path, "kea", extra)
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    with server_process(
        ["--config", str(config)], tmp_path / "server.log", env=env, prefix=net.dom0.argv()
    ) as server:
        await admin(
            server,
            "PUT",
            f"/api/v1/vms/{mac_of(1)}",
            guest_body(1, ipv4={"address": "198.18.0.31", "prefix": 24}),
        )
        status = await wait_for_dhcp(server, 1)
        assert status["ok"] is True, status
        # Kea wants /run/kea for its pid and lock files; these variables move them.
        kea = ["env", f"KEA_PIDFILE_DIR={tmp_path}", f"KEA_LOCKFILE_DIR={tmp_path}"]
        kea += [tools["kea-dhcp4"], "-c", f"{tmp_path}/dhcp/kea-dhcp4.conf"]
        with daemon_in(net.dom0, kea, tmp_path / "kea.log"):
            deadline = time.monotonic() + 10
            while not (tmp_path / "kea.sock").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            script = install_script(tmp_path)
            guest = net.add_guest(mac_of(1))
            lease = await asyncio.to_thread(get_lease, guest.ns, script, tmp_path / "lease1")
            assert lease["ip"] == "198.18.0.31" and lease["hostname"] == "guest1"
            assert lease["staticroutes"] == "169.254.169.254/32 198.18.0.1 0.0.0.0/0 198.18.0.1"
            assert option_text(lease["opt224"]) == "http://169.254.169.254"

            before = await wait_for_dhcp(server, 0)
            await admin(
                server, "PATCH", f"/api/v1/vms/{mac_of(1)}", {"ipv4": {"address": "198.18.0.32"}}
            )
            after = await wait_for_dhcp(server, int(before["syncs"]))
            assert after["ok"] is True and after["reloads"] == int(before["reloads"]) + 1, after
            lease = await asyncio.to_thread(get_lease, guest.ns, script, tmp_path / "lease2")
            assert lease["ip"] == "198.18.0.32"

            vm = await wait_for_state(server, mac_of(1), "leased")
            assert vm["state"] == "leased"
        kea_config = (tmp_path / "dhcp" / "kea-dhcp4.conf").read_text()
        reports = server.log().count("/lease HTTP")
        if leases == "file":
            assert "hooks-libraries" not in kea_config and reports == 0
        else:
            assert "libdhcp_run_script" in kea_config and reports > 0


async def test_dhcpd_accepts_the_rendered_file_and_serves_it(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    """dhcpd passes its own check on the rendered file and serves the reservation. dhcpd
    writes no lease for a fixed-address host into dhcpd.leases (ISC's rule), so the
    server, following that file, learns nothing and records nothing wrong."""
    tools = need_tools("dhcpd")
    leases = tmp_path / "dhcpd.leases"
    leases.touch()
    config = write_config(tmp_path, "dhcpd", [f'dhcpd_lease_file = "{leases}"'])
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    with server_process(
        ["--config", str(config)], tmp_path / "server.log", env=env, prefix=net.dom0.argv()
    ) as server:
        for n in (1, 2):
            await admin(
                server,
                "PUT",
                f"/api/v1/vms/{mac_of(n)}",
                guest_body(n, ipv4={"address": f"198.18.0.{40 + n}", "prefix": 24}),
            )
        status = await wait_for_dhcp(server, 1)
        assert status["ok"] is True and status["guests"] == 2, status
        conf = tmp_path / "dhcp" / "dhcpd.conf"
        subprocess.run([tools["dhcpd"], "-t", "-q", "-cf", str(conf)], check=True)
        argv = [tools["dhcpd"], "-f", "-4", "-q", "-cf", str(conf), "-lf", str(leases)]
        argv += ["-pf", str(tmp_path / "dhcpd.pid"), "br0"]
        with daemon_in(net.dom0, argv, tmp_path / "dhcpd.log"):
            script = install_script(tmp_path)
            guest = net.add_guest(mac_of(2))
            lease = await asyncio.to_thread(get_lease, guest.ns, script, tmp_path / "lease")
            assert lease["ip"] == "198.18.0.42" and lease["hostname"] == "guest2"
            assert lease["staticroutes"] == "169.254.169.254/32 198.18.0.1 0.0.0.0/0 198.18.0.1"
            assert option_text(lease["opt224"]) == "http://169.254.169.254"
            await asyncio.sleep(0.5)
            _, vm = await admin(server, "GET", f"/api/v1/vms/{mac_of(2)}")
            assert isinstance(vm, dict) and vm["state"] == "registered"
            assert "lease file" not in server.log()  # read without complaint
