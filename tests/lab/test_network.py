"""Scenario "network" on real Xen (issue 16, scenario 1): three PV guests, each a qcow2
delta of the master, registered by MAC, boot, lease from the dnsmasq the real server
runs on xenbr0, configure themselves and report configured; what they applied is read
back from their disks in dom0; a second boot of one makes no request; the bridge guard binds each real vif to its
guest's MAC."""

from __future__ import annotations

import pytest

from lab.qemu import Boot
from tests.lab.conftest import LAB_TIMEOUT, LabBoots, boot_of, print_figures, scenario_checks

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


@pytest.fixture
def lab_boot(lab_boots: LabBoots) -> Boot:
    return boot_of(lab_boots, "network")


GUESTS = ["lab-g1", "lab-g2", "lab-g3"]
PER_GUEST = ["configured", "states", "console", "hostname", "root_hash", "ssh_key", "instance"]
SECOND_BOOT = ["stops_at_once", "dhcp_seen", "no_request", "record_unchanged"]
GUARD = ["applied", "table"] + [f"{guest}.port" for guest in GUESTS]
HOSTILE = [
    "arp_dropped",
    "dhcp_server_dropped",
    "ghost_request_failed",
    "ghost_port_dropped",
    "ghost_untouched",
]


@pytest.mark.parametrize(
    "check_id",
    [f"{guest}.{check}" for guest in GUESTS for check in PER_GUEST]
    + [f"second_boot.{check}" for check in SECOND_BOOT]
    + [f"guard.{check}" for check in GUARD]
    + [f"hostile.{check}" for check in HOSTILE],
)
def test_check(lab_boot: Boot, check_id: str) -> None:
    checks = scenario_checks(lab_boot, "network")
    assert check_id in checks, f"dom0 never reported {check_id} (serial log {lab_boot.serial_log})"
    check = checks[check_id]
    assert check.status == "ok", f"{check_id}: {check.detail} (serial log {lab_boot.serial_log})"


def test_scenario_ended_with_no_other_failure(lab_boot: Boot) -> None:
    failed = {
        cid: c.detail
        for cid, c in scenario_checks(lab_boot, "network").items()
        if c.status == "FAIL"
    }
    assert failed == {}
    assert lab_boot.report.ended.get("network") is True


def test_figures(lab_boot: Boot) -> None:
    print_figures(lab_boot, "network")
    assert all(f"network.boot_to_configured.{g}" in lab_boot.report.figures for g in GUESTS)
