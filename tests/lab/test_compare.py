"""Scenario "compare" on real Xen (issue 16, scenario 5): `metadata-server compare
--hypervisor xen` in dom0, its guests real PV domUs from qcow2 deltas of the master:
one guest by each method, then two by the network method side by side; every guest
configured by its method's path, the report saying nothing stood in, nothing left
behind (by the harness's check and by dom0's own look)."""

from __future__ import annotations

import pytest

from lab.qemu import Boot
from tests.lab.conftest import LAB_TIMEOUT, LabBoots, boot_of, print_figures, scenario_checks

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


@pytest.fixture
def lab_boot(lab_boots: LabBoots) -> Boot:
    return boot_of(lab_boots, "compare")


RUN_METHODS = {"n1": ["network", "iso"], "n2": ["network"]}
CHECKS = [
    *[f"{run}.{check}" for run in RUN_METHODS for check in ("exit", "real", "nothing_left")],
    *[
        f"{run}.{method}.{check}"
        for run, methods in RUN_METHODS.items()
        for method in methods
        for check in ("configured", "nothing_left")
    ],
    "nothing_left",
]


@pytest.mark.parametrize("check_id", CHECKS)
def test_check(lab_boot: Boot, check_id: str) -> None:
    checks = scenario_checks(lab_boot, "compare")
    assert check_id in checks, f"dom0 never reported {check_id} (serial log {lab_boot.serial_log})"
    assert checks[check_id].status == "ok", f"{check_id}: {checks[check_id].detail}"


def test_scenario_ended_with_no_other_failure(lab_boot: Boot) -> None:
    failed = {
        cid: c.detail
        for cid, c in scenario_checks(lab_boot, "compare").items()
        if c.status == "FAIL"
    }
    assert failed == {}
    assert lab_boot.report.ended.get("compare") is True


def test_figures(lab_boot: Boot) -> None:
    print_figures(lab_boot, "compare")
    figures = lab_boot.report.figures
    assert "compare.n1.iso.slowest_to_configured" in figures
    assert "compare.n2.network.slowest_to_configured" in figures
