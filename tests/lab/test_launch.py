"""Scenario "launch" on real Xen (issue 17): `vm launch` of two guests from one master
made by `image prepare`, both configured with distinct names and addresses, deltas under
64 MiB, the master unchanged; `vm destroy` leaves no domain, file, registration or
xenstore key behind."""

from __future__ import annotations

import pytest

from lab.qemu import Boot
from tests.lab.conftest import LAB_TIMEOUT, LabBoots, boot_of, print_figures, scenario_checks

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


@pytest.fixture
def lab_boot(lab_boots: LabBoots) -> Boot:
    return boot_of(lab_boots, "launch")


GUESTS = ["lab-l1", "lab-l2"]
PER_GUEST = ["configured", "timeline", "delta", "ami_id", "console", "destroyed", "nothing_left"]


@pytest.mark.parametrize(
    "check_id",
    ["master_recorded", "distinct", "master_unchanged"]
    + [f"{guest}.{check}" for guest in GUESTS for check in PER_GUEST],
)
def test_check(lab_boot: Boot, check_id: str) -> None:
    checks = scenario_checks(lab_boot, "launch")
    assert check_id in checks, f"dom0 never reported {check_id} (serial log {lab_boot.serial_log})"
    assert checks[check_id].status == "ok", f"{check_id}: {checks[check_id].detail}"


def test_scenario_ended_with_no_other_failure(lab_boot: Boot) -> None:
    failed = {
        cid: c.detail
        for cid, c in scenario_checks(lab_boot, "launch").items()
        if c.status == "FAIL"
    }
    assert failed == {}
    assert lab_boot.report.ended.get("launch") is True


def test_figures(lab_boot: Boot) -> None:
    print_figures(lab_boot, "launch")
    assert all(f"launch.launch_to_configured.{g}" in lab_boot.report.figures for g in GUESTS)
