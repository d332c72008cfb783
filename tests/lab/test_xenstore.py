"""Scenario "xenstore" on real Xen (issue 16, scenario 4): the permission table that the
stand-in xenstored's test asserts (tests/testbed/test_xenstored.py), and the signal key
as the product prepares it, run by two real guests against the real xenstored."""

from __future__ import annotations

import pytest

from lab.qemu import Boot
from lab.scenarios.xenstore import PERMISSIONS, SIGNAL_CHECKS
from tests.lab.conftest import LAB_TIMEOUT, LabBoots, boot_of, scenario_checks
from tests.testbed import test_xenstored

DOMAINS = {5: "A", 6: "B", 0: "0"}


@pytest.fixture
def lab_boot(lab_boots: LabBoots) -> Boot:
    return boot_of(lab_boots, "xenstore")


def standin_table() -> list[tuple[str, str, list[str], bool]]:
    """test_permissions' own parameters, with its domains 5 and 6 as A and B."""
    (mark,) = [m for m in test_xenstored.test_permissions.pytestmark if m.name == "parametrize"]
    rows = []
    for check_id, (domid, argv, allowed) in zip(mark.kwargs["ids"], mark.args[1], strict=True):
        spelled = [w.replace("/5/", "/{A}/").replace("/6/", "/{B}/") for w in argv]
        spelled = [
            {"b5": "b{A}", "n5": "n{A}", "n6": "n{B}", "r5": "r{A}"}.get(w, w) for w in spelled
        ]
        rows.append((check_id, DOMAINS[domid], spelled, allowed))
    return rows


def test_the_lab_runs_the_standin_table() -> None:
    assert standin_table() == PERMISSIONS


@pytest.mark.xen_lab
@pytest.mark.timeout(LAB_TIMEOUT)
@pytest.mark.parametrize(
    "check_id", [row[0] for row in PERMISSIONS + SIGNAL_CHECKS] + ["signal.perms"]
)
def test_real_xenstored(lab_boot: Boot, check_id: str) -> None:
    checks = scenario_checks(lab_boot, "xenstore")
    assert check_id in checks, f"dom0 never reported {check_id} (serial log {lab_boot.serial_log})"
    assert checks[check_id].status == "ok", checks[check_id].detail


@pytest.mark.xen_lab
@pytest.mark.timeout(LAB_TIMEOUT)
def test_xenstore_scenario_ended(lab_boot: Boot) -> None:
    failed = {
        cid: c.detail
        for cid, c in scenario_checks(lab_boot, "xenstore").items()
        if c.status == "FAIL"
    }
    assert failed == {}
    assert lab_boot.report.ended.get("xenstore") is True
