"""Scenario "compare" (issue 16, scenario 5): the comparison harness on real domUs.

`metadata-server compare --hypervisor xen` as an admin runs it in a Xen Dom0: its own
server in dom0, its own bridges (one with the gateway and dnsmasq, one with nothing for
the ISO method), each guest a PV domU from a qcow2 delta of the master. One run with
one guest by each method (the report's verdict compares them), then one with two
guests by the network method, booting side by side. Checked from the harness's own
raw data: every guest configured, by the path its method means; the report saying that
nothing stood in; nothing left behind (the harness's check, and dom0's own look at
`xl list`, the bridges and the ISO directory). The report's tables go to the console.

It runs before any scenario that sets up xenbr0 (`Dom0.ready`): the harness's bridge
carries the gateway address 198.18.0.1 itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.scenarios.common import (
    MASTER,
    VENV,
    Checks,
    Dom0,
    dump,
    figure,
    run,
    step,
)

OUT = Path("/var/log/lab/compare")
KERNEL = "/boot/vmlinux-domu"
RAMDISK = "/boot/initrd-domu.img"
NO_WAIT_ONLINE = "systemd.mask=systemd-networkd-wait-online.service"
# (the run's name, its arguments): N=1 by both methods, then N=2 by the network method
RUNS = (
    ("n1", ["--guests", "1", "--methods", "network,iso"]),
    ("n2", ["--guests", "2", "--methods", "network", "--concurrency", "2"]),
)
GUEST_TIMEOUT = 480  # a guest under TCG: about a minute by network, two by ISO
FLOW_TIMEOUT = 420


def compare(name: str, args: list[str]) -> tuple[int, dict[str, Any] | None, str]:
    out = OUT / name
    argv = [
        str(VENV / "bin/metadata-server-compare"), *args, "--hypervisor", "xen",
        "--xen-image", str(MASTER), "--xen-kernel", KERNEL, "--xen-ramdisk", RAMDISK,
        "--xen-iso-extra", NO_WAIT_ONLINE, "--guest-timeout", str(GUEST_TIMEOUT),
        "--flow-timeout", str(FLOW_TIMEOUT), "--out", str(out), "--log-level", "info",
    ]  # fmt: skip
    done = run(argv, timeout=1800, check=False)
    raw = out / "raw.json"
    data = json.loads(raw.read_text()) if raw.exists() else None
    report = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    if done.returncode != 0:
        dump(f"compare {name}: exit {done.returncode}", (done.stderr or done.stdout)[-3000:])
    return done.returncode, data, report


def check_run(checks: Checks, name: str, code: int, data: dict[str, Any] | None) -> None:
    checks.report(f"{name}.exit", code == 0, f"metadata-server compare exit {code}")
    if data is None:
        checks.report(f"{name}.raw", False, "no raw.json")
        return
    for run_ in data["runs"]:
        method, n = run_["method"], run_["guests"]
        guests = run_["guest_records"]
        via = {g["via"] for g in guests}
        checks.report(
            f"{name}.{method}.configured",
            run_["configured"] == n and not run_["errors"] and via == {method},
            f"{run_['configured']}/{n} configured via {sorted(via)}, errors {run_['errors']}, "
            f"problems {[g['problem'] for g in guests if g['problem']]}",
        )
        seconds = sorted(g["seconds"] for g in guests if g["seconds"] is not None)
        if seconds:
            figure(f"compare.{name}.{method}.slowest_to_configured", seconds[-1])
        figure(f"compare.{name}.{method}.dom0_cpu", run_["dom0"]["cpu_s"])
        figure(f"compare.{name}.{method}.guests_cpu", run_["guests_cpu_s"])
        checks.report(
            f"{name}.{method}.nothing_left", run_["leftovers"] == [], f"{run_['leftovers']}"
        )
    checks.report(
        f"{name}.nothing_left", data["leftovers"] == [], f"the harness's check: {data['leftovers']}"
    )


def dom0_leftovers() -> list[str]:
    """What dom0 itself sees of a comparison after it ended."""
    found = []
    for line in run(["xl", "list"], check=False).stdout.splitlines()[1:]:
        name = line.split()[0] if line.split() else ""
        if name.startswith("msc"):
            found.append(f"domain {name}")
    for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith("msc"):
            found.append(f"link {name}")
    found += [f"file {p}" for p in Path("/tmp").glob("msc-*")]  # noqa: S108 (the harness's)
    return found


def run_scenario(dom0: Dom0) -> bool:
    checks = Checks("compare")
    dom0.toolstack()
    for name, args in RUNS:
        step(f"metadata-server compare --hypervisor xen {' '.join(args)}")
        code, data, report = compare(name, args)
        check_run(checks, name, code, data)
        tables = [line for line in report.splitlines() if line.startswith(("|", "- **N", "Run "))]
        dump(f"compare {name}: the report's tables", "\n".join(tables))
        if data is not None:
            text = report.split("## What was real")[1] if "## What was real" in report else ""
            checks.report(
                f"{name}.real",
                "Stood in: nothing." in text and "PV domUs" in text,
                "the report's 'what was real' section",
            )
    left = dom0_leftovers()
    checks.report("nothing_left", left == [], f"dom0 sees {left}")
    return checks.failures == 0
