"""Scenarios "iso" and "fallback" on real Xen (issue 16, scenarios 2 and 3): the ISO flow
through the real xl block-attach, blkback, the guest's iso9660 and xenstored, with
nothing left behind; @releaseDomain ending a wait; the automatic fallback."""

from __future__ import annotations

import pytest

from lab.qemu import Boot
from tests.lab.conftest import LAB_TIMEOUT, LabBoots, boot_of, print_figures, scenario_checks

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


@pytest.fixture
def lab_boot(lab_boots: LabBoots, scenario: str) -> Boot:
    """The boot that ran the test's `scenario` (iso and fallback are in different groups)."""
    return boot_of(lab_boots, scenario)


LEFT = ["no_iso_file", "no_signal_key", "no_vbd", "no_loop_device"]
ISO = (
    [
        "provision.exit",
        "configured",
        "seen.vbd",
        "seen.iso_file",
        "seen.signal_key",
        "guest.read_iso",
    ]
    + [f"after.{c}" for c in LEFT]
    + [f"lab-iso1.{c}" for c in ("hostname", "root_hash", "ssh_key", "instance")]
)
FALLBACK = (
    ["release_domain.ends_wait", "release_domain.failed"]
    + [f"release_domain.{c}" for c in LEFT]
    + ["auto.configured", "auto.never_leased"]
    + [f"auto.{c}" for c in LEFT]
)


@pytest.mark.parametrize(
    ("scenario", "check_id"), [("iso", c) for c in ISO] + [("fallback", c) for c in FALLBACK]
)
def test_check(lab_boot: Boot, scenario: str, check_id: str) -> None:
    checks = scenario_checks(lab_boot, scenario)
    assert check_id in checks, (
        f"dom0 never reported {scenario}.{check_id} (serial log {lab_boot.serial_log})"
    )
    assert checks[check_id].status == "ok", checks[check_id].detail


@pytest.mark.parametrize("scenario", ["iso", "fallback"])
def test_scenario_ended_with_no_other_failure(lab_boot: Boot, scenario: str) -> None:
    failed = {
        cid: c.detail
        for cid, c in scenario_checks(lab_boot, scenario).items()
        if c.status == "FAIL"
    }
    assert failed == {}
    assert lab_boot.report.ended.get(scenario) is True


def test_figures(lab_boots: LabBoots) -> None:
    print_figures(boot_of(lab_boots, "iso"), "iso")
    print_figures(boot_of(lab_boots, "fallback"), "fallback")
    assert "iso.boot_to_configured" in boot_of(lab_boots, "iso").report.figures
