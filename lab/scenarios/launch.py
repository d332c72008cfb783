"""Scenario "launch" (issue 17): `metadata-server vm launch` on real Xen.

Two guests are launched, one after the other, from one master that the builder made with
`metadata-server image prepare` (images/prepared.qcow2): each command registers the
guest, clones its delta, writes its xl config, runs `xl create` and waits until the
guest reports `configured`. Checked: both configured, with distinct host names and
addresses, each delta a qcow2 on the master under 64 MiB, the master's digest unchanged,
the guests' `ami-id` the master's image id. Then `vm destroy` of each must leave no
domain, no file (delta, xl config, launch directory), no registration and no xenstore
key of the domain behind.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from lab.scenarios.common import (
    ADMIN_TOKEN,
    ROOT,
    VENV,
    Checks,
    CommandFailed,
    Dom0,
    admin,
    figure,
    report_phases,
    run,
    ssh_public_key,
    step,
    wait_for,
)

PREPARED = ROOT / "images/prepared.qcow2"
CONFIG = Path("/etc/metadata-server/lab.toml")  # written by start_server
KERNEL = "/boot/vmlinux-domu"  # the master's kernel, as the other scenarios boot it
RAMDISK = "/boot/initrd-domu.img"
NAMES = ("lab-l1", "lab-l2")
LAUNCH_WAIT = 480  # seconds `vm launch` waits for configured (a lone guest under TCG: 2-5 min)
DELTA_LIMIT = 64 << 20


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`metadata-server ARGS`; an admin command (vm ...) gets the lab server's config."""
    config = ["--config", str(CONFIG)] if args[0] == "vm" else []
    return run(
        [str(VENV / "bin/metadata-server"), *args[:2], *config, *args[2:]],
        timeout=timeout,
        check=False,
        env={"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN},
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def launch(checks: Checks, name: str, key: str) -> dict[str, Any] | None:
    step(f"vm launch {name}")
    started = time.monotonic()
    done = cli(
        "vm",
        "launch",
        name,
        "--image",
        str(PREPARED),
        "--kernel",
        KERNEL,
        "--ramdisk",
        RAMDISK,
        "--memory",
        "256",
        "--ssh-key",
        key,
        "--wait",
        str(LAUNCH_WAIT),
        "--json",
        timeout=LAUNCH_WAIT + 300,
    )
    took = time.monotonic() - started
    for line in done.stderr.splitlines()[-20:]:
        step(f"{name}| {line}")
    result: dict[str, Any] | None = None
    if done.returncode == 0:
        result = json.loads(done.stdout)
    configured = result is not None and result["configured"] is True
    checks.report(
        f"{name}.configured",
        configured,
        f"vm launch exit {done.returncode}, state {result and result['state']}"
        if result is not None or done.returncode == 0
        else f"vm launch exit {done.returncode}: {done.stderr.strip()[-300:]}",
    )
    if configured:
        figure(f"launch.launch_to_configured.{name}", took)
        report_phases("launch", name, took)
    return result


def check_launched(checks: Checks, name: str, result: dict[str, Any], image_id: str) -> None:
    states = [entry["state"] for entry in result["timeline"]]
    checks.report(
        f"{name}.timeline",
        all(s in states for s in ("registered", "leased", "fetched", "configured")),
        f"timeline {states}",
    )
    delta = Path(result["delta"])
    info = json.loads(run(["qemu-img", "info", "-U", "--output=json", str(delta)]).stdout)
    allocated = delta.stat().st_blocks * 512
    checks.report(
        f"{name}.delta",
        info.get("format") == "qcow2"
        and info.get("backing-filename") == str(PREPARED)
        and allocated < DELTA_LIMIT,
        f"{info.get('format')} on {info.get('backing-filename')}, "
        f"{allocated / (1 << 20):.1f} MiB allocated",
    )
    checks.report(
        f"{name}.ami_id",
        result["image_id"] == image_id and result["vm"]["launch"]["image_id"] == image_id,
        f"image id {result['image_id']}, the master's {image_id}",
    )


def domain_keys(domid: int) -> list[str]:
    """The xenstore paths of domain `domid` that exist."""
    paths = [
        f"/local/domain/{domid}",
        f"/libxl/{domid}",
        f"/local/domain/0/backend/vif/{domid}",
        f"/local/domain/0/backend/qdisk/{domid}",
        f"/local/domain/0/backend/vbd/{domid}",
    ]
    return [p for p in paths if run(["xenstore-exists", p], check=False).returncode == 0]


def check_destroy(checks: Checks, result: dict[str, Any]) -> None:
    name = result["name"]
    domid_text = run(["xl", "domid", name], check=False).stdout.strip()
    domid = int(domid_text) if domid_text.isdigit() else None
    launch_dir = Path(result["xl_config"]).parent
    done = cli("vm", "destroy", name, timeout=180)
    checks.report(
        f"{name}.destroyed",
        done.returncode == 0,
        (done.stdout or done.stderr).strip()[-300:],
    )
    gone_domain = run(["xl", "domid", name], check=False).returncode != 0
    files = [
        p for p in (Path(result["delta"]), Path(result["xl_config"]), launch_dir) if p.exists()
    ]
    status, _ = admin("GET", f"/api/v1/vms/{result['mac']}")
    keys: list[str] = []
    if domid is not None:
        # libxl removes the backends as the domain dies; give xenstored a moment
        try:
            wait_for(f"{name}'s xenstore keys gone", lambda: not domain_keys(domid), 30, 1.0)
        except TimeoutError:
            keys = domain_keys(domid)
    checks.report(
        f"{name}.nothing_left",
        gone_domain and not files and status == 404 and domid is not None and not keys,
        f"domain {'gone' if gone_domain else 'still there'} (domid was {domid}), "
        f"files left {[str(p) for p in files]}, GET the guest {status}, xenstore keys {keys}",
    )


def run_scenario(dom0: Dom0) -> bool:
    checks = Checks("launch")
    dom0.server()
    shown = cli("image", "show", str(PREPARED))
    if shown.returncode != 0:
        raise CommandFailed(f"image show {PREPARED}: {shown.stderr.strip()}")
    record = json.loads(shown.stdout)
    before = sha256(PREPARED)
    checks.report(
        "master_recorded", before == record["sha256"], f"{record['image_id']}, {record['root']}"
    )
    results: list[dict[str, Any]] = []
    for name in NAMES:
        guest = dom0.guest(name, "", "")  # for the diagnostics and the cleanup
        result = launch(checks, name, ssh_public_key(f"lab@{name}"))
        if result is not None:
            guest.mac, guest.address = result["mac"], result["address"]
            check_launched(checks, name, result, record["image_id"])
            results.append(result)
    checks.report(
        "distinct",
        len(results) == len(NAMES)
        and len({r["fqdn"] for r in results}) == len(NAMES)
        and len({r["address"] for r in results}) == len(NAMES)
        and len({r["mac"] for r in results}) == len(NAMES),
        ", ".join(f"{r['fqdn']} {r['address']} {r['mac']}" for r in results),
    )
    for result in results:
        applied = f"applied instance {result['vm']['instance_id']}"
        guest = next(g for g in dom0.guests if g.name == result["name"])
        checks.report(
            f"{result['name']}.console",
            applied in guest.console(),
            "the boot script's line on the guest's console",
        )
    step("vm destroy of the launched guests")
    for result in results:
        check_destroy(checks, result)
    after = sha256(PREPARED)
    checks.report("master_unchanged", after == before, f"sha256 {after[:16]}... before and after")
    if checks.failures:
        dom0.diagnostics()
    return checks.failures == 0
