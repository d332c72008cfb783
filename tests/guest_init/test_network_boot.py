"""The guest script's first boot over the real network path: the server (a process in a
Dom0 namespace) runs dnsmasq on the bridge; the guest is a busybox rootfs in its own
network, mount and UTS namespaces; its udhcpc gets the reserved lease with the option 121
route and option 224 URL (saved by dhcp-hook), and metadata-init, with no configuration
of its own, finds the server from that and configures the guest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.guest_init.conftest import MAC, Guest
from tests.support.dom0 import admin_call, dom0_config, wait_for_dhcp, wait_for_state
from tests.support.netns import BridgeNetwork, bridge_network
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, guest_body
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN

UDHCPC_SCRIPT = """#!/bin/sh
# The guest's udhcpc script: apply the lease, then let dhcp-hook save option 224.
case "$1" in
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	set -- $staticroutes
	while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
	/usr/lib/metadata-init/dhcp-hook
	;;
esac
"""
FIRST_BOOT = """udhcpc -i eth0 -f -q -n -t 6 -T 1 -s /etc/udhcpc.script -O staticroutes -O 224 >/dev/null 2>&1 || exit 90
ip -4 -o addr show dev eth0 | awk '{print "lease=" $4}'
metadata-init; rc=$?
echo "hostname=$(hostname)"
exit $rc"""


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "dnsmasq", "busybox")
    with bridge_network() as network:
        yield network


@pytest.mark.parametrize("shell", ["busybox", "dash"])
async def test_first_boot_over_dhcp_and_the_metadata_address(
    net: BridgeNetwork, tmp_path: Path, make_guest: Callable[..., Guest], shell: str
) -> None:
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    config = dom0_config(tmp_path)
    with server_process(
        ["--config", str(config)], tmp_path / "server.log", env=env, prefix=net.dom0.argv()
    ) as server:
        body = guest_body(
            1,
            hostname="web1",
            ipv4={"address": "198.18.0.61", "prefix": 24, "gateway": "198.18.0.1"},
        )
        status, _ = await admin_call(server, "PUT", f"/api/v1/vms/{MAC}", body)
        assert status == 201
        await wait_for_dhcp(server, 1)

        guest = make_guest(shell)
        guest.rootfs.write("/etc/udhcpc.script", UDHCPC_SCRIPT, mode=0o755)
        ns = net.add_guest(MAC).ns
        result = await guest.rootfs.run_async(
            ["/bin/sh", "-c", FIRST_BOOT], netns=ns.name, hostname="template", timeout=60
        )
        assert result.returncode == 0, (result.stdout, result.stderr, guest.log())
        out = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        assert out["lease"] == "198.18.0.61/24"
        assert out["hostname"] == "web1"
        assert guest.rootfs.read("/run/metadata-init/dhcp-url").strip() == "http://169.254.169.254"
        assert guest.rootfs.read("/etc/hostname").strip() == "web1"
        assert "127.0.1.1 web1.guests.internal web1" in guest.rootfs.read("/etc/hosts")
        assert guest.shadow_hash() == SAMPLE_HASH
        assert SAMPLE_KEY in guest.rootfs.read("/root/.ssh/authorized_keys")
        vm = await wait_for_state(server, MAC, "configured")
        assert {"registered", "fetched", "configured"} <= set(vm["state_times"])  # type: ignore[arg-type]
        assert SAMPLE_HASH not in guest.log()
