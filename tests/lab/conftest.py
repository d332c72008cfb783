"""The Xen lab for the host-side tests: built once per session (cached across sessions
by the builder), and booted once per group of scenarios, the groups' VMs side by side,
each with its share of the host's cores (lab.qemu.machine_for: on 2 cores, two 1-vCPU
VMs took 8.5 minutes where one 2-vCPU VM took 12.5). The scenarios of a group share one
dom0 boot and run in order in it.

Outside CI a missing QEMU or debootstrap, or not being root, skips with the reason;
under CI=true it fails (the test command installs them)."""

from __future__ import annotations

import sys
import time

import pytest

from lab import markers
from lab.builder.build import BuildReport, build
from lab.builder.cache import cache_dir
from lab.qemu import Boot, LabFailed, boot_groups
from tests.support.requirements import need_root, need_tools

# One VM per group, all at once; in a group, in the order its dom0 runs them. Balanced
# by their guests' boots: xenstore 2, network 5 (three guests, the co-tenant, a second
# boot), iso 1 (after a minute of trying the network); compare 4 (1 by network, 1 by
# ISO, then 2 side by side; before anything sets up xenbr0), launch 2, fallback 2.
GROUPS = (("xenstore", "network", "iso"), ("compare", "launch", "fallback"))
BOOT_DEADLINE = 2400.0  # seconds for each group's boot (here 6 to 9 minutes; the goal: 15)
LAB_TIMEOUT = 3000  # pytest-timeout for a test that waits for the build and the boot


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


LabBoots = dict[str, Boot | LabFailed]  # by scenario: its group's boot, or why it failed


@pytest.fixture(scope="session")
def lab_boots(lab_build: BuildReport) -> LabBoots:
    started = time.monotonic()
    outcomes = boot_groups(
        lab_build.lab, GROUPS, log_dir=cache_dir() / "logs", deadline=BOOT_DEADLINE, say=say
    )
    for group in GROUPS:
        outcome = outcomes[group[0]]
        if isinstance(outcome, LabFailed):
            say(f"lab: the boot for {', '.join(group)} failed")
        else:
            first = outcome.first_marker_seconds or 0.0
            say(
                f"lab: boot for {', '.join(group)} {outcome.seconds:.1f} s, "
                f"dom0 to its first scenario line {first:.1f} s"
            )
    say(f"lab: every group's boot, side by side: {time.monotonic() - started:.1f} s")
    return outcomes


def boot_of(boots: LabBoots, scenario: str) -> Boot:
    """The boot that ran `scenario`; its group's failure (with the serial tail) fails
    the test."""
    outcome = boots[scenario]
    if isinstance(outcome, LabFailed):
        pytest.fail(str(outcome), pytrace=False)
    return outcome


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
