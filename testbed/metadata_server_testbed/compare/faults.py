"""The `--faults` runs: what each method survives, and what it leaves behind.

- `server-down`: the guest API does not answer (the server runs, DHCP and the ISO
  fallback with it, but nothing listens on 169.254.169.254:80). The network method's
  guests fall back to the configuration disk, which Dom0 attaches when they boot (as
  the automatic fallback would); the ISO method does not need the guest API at all.
  Survived: every guest configured.
- `never-signals`: the guest reads its configuration but never says so. Network: it
  fetches the document and stops (no status report). ISO: it cannot reach xenstore, so
  Dom0's wait times out; Dom0 must then detach and delete the ISO and remove the keys.
- `killed`: the guest dies half-way: after its DHCP lease (network), after the disk
  appeared (ISO); the toolstack destroys the dead domain, so Dom0's flow sees it go.

For the last two, surviving means: no guest wrongly recorded as configured, the server
still healthy, and nothing left behind; the report also says whether Dom0 noticed
(`failed` with a reason) or the guest is stuck in `fetched`/`leased` unnoticed.
Builds scenarios and judges records; the running is `runner.execute`'s.
"""

from __future__ import annotations

from collections import Counter

from metadata_server_testbed.compare.results import FaultRecord, RunRecord
from metadata_server_testbed.compare.runner import Scenario

FAULTS = ("server-down", "never-signals", "killed")
PAUSE = "60"  # seconds a guest to be killed waits at its stage (it is killed at once)
# The network path gives up quickly, so the fallback shows within the run's timeouts.
QUICK_FALLBACK = "timeout=1\nretry_total=2\n"
ISO_BOOT = ("--disk", "--", "--iso")


def scenario(fault: str, method: str, signal_timeout: float) -> Scenario:
    name = f"{fault}-{method}"
    if fault == "server-down":
        if method == "network":
            return Scenario(
                name,
                method,
                iso_dom0=True,
                dhcp=True,
                guest_api=False,
                boot_options=("--dhcp", "--watch-disk"),
                provision=True,
                guest_conf=QUICK_FALLBACK,
            )
        return Scenario(
            name, method, iso_dom0=True, dhcp=False, guest_api=False, boot_options=ISO_BOOT,
            provision=True,
        )  # fmt: skip
    if fault == "never-signals":
        if method == "network":
            return Scenario(
                name, method, iso_dom0=False, dhcp=True, boot_options=("--dhcp", "--fetch-only")
            )
        return Scenario(
            name,
            method,
            iso_dom0=True,
            dhcp=False,
            boot_options=("--disk", "--no-signal", "--", "--iso"),
            provision=True,
            flow_timeout=signal_timeout,
        )
    if fault == "killed":
        if method == "network":
            return Scenario(
                name,
                method,
                iso_dom0=False,
                dhcp=True,
                boot_options=("--dhcp", "--pause", PAUSE),
                kill_at_stage="paused",
            )
        return Scenario(
            name,
            method,
            iso_dom0=True,
            dhcp=False,
            boot_options=("--disk", "--pause", PAUSE, "--", "--iso"),
            provision=True,
            kill_at_stage="paused",
            destroy_killed=True,
        )
    raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


EXPECTED = {
    "server-down": "Survives if every guest is configured anyway, with nothing left behind.",
    "never-signals": "Survives if no guest is wrongly recorded as configured, the server "
    "stays healthy and nothing is left behind (Dom0 noticing it is better).",
    "killed": "Survives if no guest is wrongly recorded as configured, the server stays "
    "healthy and nothing is left behind (Dom0 noticing it is better).",
}
STUCK_STATES = ("registered", "leased", "fetched")


def judge(fault: str, method: str, run: RunRecord) -> FaultRecord:
    states = Counter(guest.state for guest in run.guest_records)
    configured = states.get("configured", 0)
    healthy = not any("unhealthy" in error for error in run.errors)
    clean = not run.leftovers
    if fault == "server-down":
        survived = configured == run.guests and clean and healthy
    else:
        survived = configured == 0 and clean and healthy
    messages = sorted({g.problem for g in run.guest_records if g.problem})
    return FaultRecord(
        fault=fault,
        method=method,
        guests=run.guests,
        configured=configured,
        detected=states.get("failed", 0),
        stuck=sum(states.get(state, 0) for state in STUCK_STATES),
        dom0_healthy=healthy,
        expected=EXPECTED[fault],
        survived=survived and not run.errors,
        states=dict(states),
        messages=messages,
        leftovers=list(run.leftovers),
        errors=list(run.errors),
    )
