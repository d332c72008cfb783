"""The Xen lab for the host-side tests: built once per session (cached across sessions
by the builder), and booted once for every scenario (they share one dom0 boot: its boot
and the server's start are most of a scenario's time under TCG).

Outside CI a missing QEMU or debootstrap, or not being root, skips with the reason;
under CI=true it fails (the test command installs them)."""

from __future__ import annotations

import sys

import pytest

from lab import markers
from lab.builder.build import BuildReport, build
from lab.builder.cache import cache_dir
from lab.qemu import Boot, boot
from tests.support.requirements import need_root, need_tools

# In the order dom0 runs them, in one boot.
SCENARIOS = ["xenstore", "network", "launch", "iso", "fallback"]
BOOT_DEADLINE = 3600.0  # seconds for the one boot of every scenario (its goal: 15 minutes)
LAB_TIMEOUT = 4500  # pytest-timeout for a test that waits for the build and the boot


def need_lab_tools() -> None:
    need_root()
    need_tools("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4")


def say(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def lab_build() -> BuildReport:
    need_lab_tools()
    report = build(cache_root=cache_dir(), say=say)
    say(
        f"lab: build {report.total_seconds:.1f} s (base "
        f"{'cached' if report.base_seconds is None else f'{report.base_seconds:.0f} s'}, project "
        f"{'cached' if report.project_seconds is None else f'{report.project_seconds:.0f} s'})"
    )
    return report


@pytest.fixture(scope="session")
def lab_boot(lab_build: BuildReport) -> Boot:
    result = boot(
        lab_build.lab, SCENARIOS, log_dir=cache_dir() / "logs", deadline=BOOT_DEADLINE, say=say
    )
    first = result.first_marker_seconds or 0.0
    say(f"lab: boot {result.seconds:.1f} s, dom0 to its first scenario line {first:.1f} s")
    return result


def scenario_checks(result: Boot, scenario: str) -> dict[str, markers.Check]:
    """The checks of one scenario, by id without the scenario's prefix."""
    prefix = f"{scenario}."
    return {
        cid[len(prefix) :]: c for cid, c in result.report.checks.items() if cid.startswith(prefix)
    }


def print_figures(result: Boot, scenario: str) -> None:
    lines = [f"figures of the lab ({scenario}, {result.accel.name}):"]
    if result.first_marker_seconds is not None:
        lines.append(
            f"  dom0 boot, QEMU start to the first scenario line: {result.first_marker_seconds:.1f} s"
        )
    for name, value in sorted(result.report.figures.items()):
        if name.startswith((f"{scenario}.", "dom0.")):
            lines.append(f"  {name}: {value:.1f} s")
    say("\n".join(lines))
