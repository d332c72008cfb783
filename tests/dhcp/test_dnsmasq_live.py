"""The whole DHCP path with real parts: the server (as a process, in a Dom0 namespace)
runs dnsmasq on the bridge; guests in their own namespaces get their reserved address,
hostname, option 121 route and metadata URL from busybox udhcpc, then read their own
configuration at 169.254.169.254; dnsmasq's lease file marks them leased; a registry change
shows at the next exchange; a broken template leaves files and dnsmasq untouched."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dhcp_client import get_lease, install_script, option_text
from tests.support.dom0 import admin_call, dom0_config, wait_for_dhcp, wait_for_state
from tests.support.netns import BridgeNetwork, bridge_network
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

TEMPLATES = Path(__file__).resolve().parents[2] / "dhcp_templates"


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "dnsmasq", "busybox", "curl")
    with bridge_network() as network:
        yield network


def config(tmp_path: Path, templates: Path | None = None) -> Path:
    return dom0_config(tmp_path, templates=templates)


admin = admin_call


async def test_guests_get_their_reservation_and_reach_their_config(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    prefix = net.dom0.argv()
    with server_process(
        ["--config", str(config(tmp_path))], tmp_path / "server.log", env=env, prefix=prefix
    ) as server:
        _, before = await admin(server, "GET", "/api/v1/dhcp/status")
        guests = {}
        for n in (1, 2):
            body = guest_body(
                n, ipv4={"address": f"198.18.0.{20 + n}", "prefix": 24, "gateway": "198.18.0.1"}
            )
            status, _ = await admin(server, "PUT", f"/api/v1/vms/{mac_of(n)}", body)
            assert status == 201
        dhcp = await wait_for_dhcp(server, int(before["syncs"]))  # type: ignore[index]
        assert dhcp["ok"] is True and dhcp["guests"] == 2 and dhcp["managed_pid"]
        script = install_script(tmp_path)
        for n in (1, 2):
            guest = net.add_guest(mac_of(n))
            lease = await asyncio.to_thread(get_lease, guest.ns, script, tmp_path / f"lease{n}")
            assert lease["ip"] == f"198.18.0.{20 + n}" and lease["mask"] == "24"
            assert lease["hostname"] == f"guest{n}" and lease["domain"] == "guests.internal"
            assert lease["dns"] == "198.18.0.1", "the server's own DNS responder"
            assert lease["staticroutes"] == "169.254.169.254/32 198.18.0.1 0.0.0.0/0 198.18.0.1"
            assert option_text(lease["opt224"]) == "http://169.254.169.254"
            out = await asyncio.to_thread(
                guest.ns.run, "curl", "-s", "--max-time", "5", "http://169.254.169.254/v1/config"
            )
            assert json.loads(out)["hostname"] == f"guest{n}"
            guests[n] = guest
        # Guests resolve each other and the metadata server by name, through the DHCP's DNS.
        out = await asyncio.to_thread(
            guests[2].ns.run, "busybox", "nslookup", "guest1.guests.internal", "198.18.0.1"
        )
        assert "198.18.0.21" in out
        out = await asyncio.to_thread(
            guests[2].ns.run, "busybox", "nslookup", "metadata.guests.internal", "198.18.0.1"
        )
        assert "169.254.169.254" in out

        # dnsmasq's lease file told the server: registered → leased, then the fetch above
        # moved it on to fetched. No process ran per lease: dnsmasq has no --dhcp-script,
        # and nothing reported a lease to the admin API.
        await wait_for_state(server, mac_of(1), "leased")
        dnsmasq_argv = Path(f"/proc/{dhcp['managed_pid']}/cmdline").read_bytes().split(b"\0")
        assert not any(arg.startswith(b"--dhcp-script") for arg in dnsmasq_argv)
        assert "/lease HTTP" not in server.log()

        # A registry change shows at the next DHCP exchange.
        _, before = await admin(server, "GET", "/api/v1/dhcp/status")
        status, _ = await admin(
            server,
            "PATCH",
            f"/api/v1/vms/{mac_of(1)}",
            {"ipv4": {"address": "198.18.0.99"}, "hostname": "renamed"},
        )
        assert status == 200
        await wait_for_dhcp(server, int(before["syncs"]))  # type: ignore[index]
        lease = await asyncio.to_thread(get_lease, guests[1].ns, script, tmp_path / "lease1b")
        assert lease["ip"] == "198.18.0.99" and lease["hostname"] == "renamed"

        # An unknown MAC gets nothing.
        stranger = net.add_guest("02:00:c6:12:00:ee")
        with pytest.raises(RuntimeError):
            await asyncio.to_thread(
                get_lease, stranger.ns, script, tmp_path / "lease-x", timeout=15
            )
        assert "169.254.169.254/32" in net.dom0.run("ip", "-br", "addr", "show", "br0")
    # The server put the metadata address on the bridge, and took it away when it stopped.
    assert "169.254.169.254" not in net.dom0.run("ip", "-br", "addr", "show", "br0")


async def test_broken_template_leaves_files_and_dnsmasq_untouched(
    net: BridgeNetwork, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    path = config(tmp_path, templates)
    with server_process(
        ["--config", str(path)], tmp_path / "server.log", env=env, prefix=net.dom0.argv()
    ) as server:
        await admin(
            server,
            "PUT",
            f"/api/v1/vms/{mac_of(1)}",
            guest_body(1, ipv4={"address": "198.18.0.21", "prefix": 24}),
        )
        good = await wait_for_dhcp(server, 0)
        directory = Path(str(good["directory"]))
        before = {
            name: (directory / name).read_text() for name in ("dnsmasq.conf", "dnsmasq-hosts")
        }

        (templates / "dnsmasq-hosts.j2").write_text("{{ hosts | no_such_filter }}\n")
        await admin(
            server,
            "PUT",
            f"/api/v1/vms/{mac_of(2)}",
            guest_body(2, ipv4={"address": "198.18.0.22", "prefix": 24}),
        )
        broken = await wait_for_dhcp(server, int(good["syncs"]))
        assert broken["ok"] is False and "template" in str(broken["error"])
        assert {name: (directory / name).read_text() for name in before} == before
        assert broken["managed_pid"] == good["managed_pid"] and broken["reloads"] == good["reloads"]

        # A template that renders, but into a configuration dnsmasq's checker refuses.
        (templates / "dnsmasq-hosts.j2").write_text((TEMPLATES / "dnsmasq-hosts.j2").read_text())
        (templates / "dnsmasq.conf.j2").write_text("dhcp-range=not,a,range\n")
        await admin(server, "PATCH", f"/api/v1/vms/{mac_of(2)}", {"hostname": "again"})
        refused = await wait_for_dhcp(server, int(broken["syncs"]))
        assert refused["ok"] is False and "dnsmasq refused it" in str(refused["error"])
        assert {name: (directory / name).read_text() for name in before} == before
        assert refused["managed_pid"] == good["managed_pid"]
        assert "DHCP configuration not applied" in server.log()
