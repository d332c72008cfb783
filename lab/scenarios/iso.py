"""Scenarios "iso" and "fallback" (issue 16, scenarios 2 and 3): the ISO path on real Xen.

"iso": a guest whose vif is on xenbr1 (nothing there: it cannot reach the server) is
provisioned with `metadata-server iso provision` through the real `xl block-attach`; the
guest's boot script reads the ISO with the kernel's iso9660 (there is no other reader in
the master), signals through the real xenstored, and dom0 detaches it. While the flow
runs dom0 sees the vbd, the ISO file and the signal key; after it, none of them, nor a
loop device. Then its disk shows what was applied.

"fallback": a guest destroyed while the flow waits for it: `@releaseDomain` ends the
wait at once, the guest is `failed`, nothing is left. Then the server with `iso.auto`:
a guest that never reaches it is provisioned by ISO on its own, `iso.auto_after`
seconds after its domain appeared.

The guests on xenbr1 boot with systemd-networkd-wait-online masked: their network never
comes up, and waiting two minutes for it would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from lab.scenarios.common import (
    ADMIN,
    ADMIN_TOKEN,
    ISOLATED_BRIDGE,
    VENV,
    Checks,
    Dom0,
    Guest,
    create_all,
    destroy,
    figure,
    parse_time,
    run,
    shut_down,
    step,
    wait_for,
)
from lab.scenarios.network import check_disks

ISO_DIR = Path("/var/lib/metadata-server/iso")
NO_WAIT_ONLINE = "systemd.mask=systemd-networkd-wait-online.service"
ISO_VDEV = "xvdd"
ISO_DEVID = 51760  # xvdd: 202 * 256 + 3 * 16
AUTO_AFTER = 20.0


def provision(guest: Guest, timeout: float = 300) -> subprocess.Popen[str]:
    """`metadata-server iso provision` as an admin runs it, in the background."""
    argv = [
        str(VENV / "bin/metadata-server"), "iso", "provision", "--mac", guest.mac,
        "--url", ADMIN, "--timeout", str(timeout), "--json",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip


def isos() -> list[str]:
    return sorted(p.name for p in ISO_DIR.glob("*")) if ISO_DIR.exists() else []


def vbd_attached(guest: Guest) -> bool:
    listed = run(["xl", "block-list", guest.name], check=False).stdout.split()
    return str(ISO_DEVID) in listed


def signal_key(domid: int) -> bool:
    path = f"/local/domain/{domid}/data/metadata-init"
    return run(["xenstore-exists", path], check=False).returncode == 0


def loops_on_isos() -> list[str]:
    listed = run(["losetup", "-a"], check=False).stdout.splitlines()
    return [line for line in listed if str(ISO_DIR) in line or ".iso" in line]


def check_nothing_left(checks: Checks, prefix: str, guest: Guest, domid: int) -> None:
    checks.report(f"{prefix}.no_iso_file", isos() == [], f"{ISO_DIR}: {isos()}")
    checks.report(f"{prefix}.no_signal_key", not signal_key(domid),
                  f"/local/domain/{domid}/data/metadata-init")  # fmt: skip
    backend = f"/local/domain/0/backend/vbd/{domid}/{ISO_DEVID}"
    gone = run(["xenstore-exists", backend], check=False).returncode != 0
    checks.report(f"{prefix}.no_vbd", gone and not (guest.domid() and vbd_attached(guest)),
                  f"{backend} and xl block-list")  # fmt: skip
    checks.report(f"{prefix}.no_loop_device", loops_on_isos() == [], f"losetup: {loops_on_isos()}")


def run_iso(dom0: Dom0) -> bool:
    checks = Checks("iso")
    dom0.server()
    guest = dom0.guest("lab-iso1", "00:16:3e:1a:b1:01", "198.18.0.21", extra=NO_WAIT_ONLINE,
                       bridge=ISOLATED_BRIDGE)  # fmt: skip
    guest.register()
    guest.make_disk()
    step("creating a guest that cannot reach the server")
    create_all([guest])
    domid = guest.domid() or 0
    flow = provision(guest)
    seen = {"vbd": False, "iso": False, "key": False}
    while flow.poll() is None:
        seen["vbd"] = seen["vbd"] or vbd_attached(guest)
        seen["iso"] = seen["iso"] or bool(isos())
        seen["key"] = seen["key"] or signal_key(domid)
        time.sleep(2)
    output = flow.stdout.read() if flow.stdout else ""
    checks.report("provision.exit", flow.returncode == 0, output.strip()[-300:])
    vm = guest.vm()
    checks.report(
        "configured", vm["state"] == "configured", f"state {vm['state']}: {vm.get('message')}"
    )
    if "configured" in vm["state_times"]:
        figure(
            "iso.boot_to_configured", parse_time(vm["state_times"]["configured"]) - guest.started
        )
    checks.report("seen.vbd", seen["vbd"], f"xl block-list showed {ISO_VDEV} while the flow ran")
    checks.report("seen.iso_file", seen["iso"], f"an ISO in {ISO_DIR} while the flow ran")
    checks.report("seen.signal_key", seen["key"], "the signal key existed while the flow ran")
    console = guest.console()
    checks.report("guest.read_iso", f"read the configuration from /dev/{ISO_VDEV}" in console,
                  "the boot script's line on the guest's console")  # fmt: skip
    check_nothing_left(checks, "after", guest, domid)
    step("shutting the ISO guest down")
    shut_down([guest])
    check_disks(checks, [guest], {guest.name: vm})
    if checks.failures:
        dom0.diagnostics()
    return checks.failures == 0


def run_fallback(dom0: Dom0) -> bool:
    checks = Checks("fallback")
    dom0.server()
    # 1. a guest that dies while Dom0 waits for its signal (its boot script never runs)
    # its init only sleeps: it never signals, and its full boot would add nothing
    dying = dom0.guest("lab-dying", "00:16:3e:1a:b1:02", "198.18.0.22",
                       extra="init=/bin/sleep -- infinity", bridge=ISOLATED_BRIDGE)  # fmt: skip
    dying.register()
    dying.make_disk()
    step("a guest destroyed while the ISO flow waits")
    create_all([dying])
    domid = dying.domid() or 0
    flow = provision(dying)
    # `fetched`: the attach is done and the flow waits for the signal (a destroy during
    # `xl block-attach` ends the flow too, but through xl failing, not @releaseDomain)
    wait_for("the flow waiting for the dying guest", lambda: dying.vm()["state"] == "fetched", 120)
    destroyed = time.monotonic()
    run(["xl", "destroy", dying.name])
    try:
        flow.wait(90)
    except subprocess.TimeoutExpired:
        flow.kill()
    ended = time.monotonic() - destroyed
    figure("fallback.destroy_to_flow_end", ended)
    vm = dying.vm()
    detail = f"flow ended {ended:.1f} s after xl destroy (exit {flow.returncode})"
    checks.report("release_domain.ends_wait", flow.returncode == 1 and ended < 30, detail)
    # the reason must be the guest's end seen by the wait (GuestGone), not a failing xl
    message = str(vm.get("message"))
    died = "died or was destroyed" in message or "signal key" in message
    checks.report(
        "release_domain.failed",
        vm["state"] == "failed" and died,
        f"{vm['state']}: {vm.get('message')}",
    )
    check_nothing_left(checks, "release_domain", dying, domid)

    # 2. the automatic fallback for a guest that never reaches the server
    step("the server with iso.auto; a late guest")
    dom0.server(iso_auto=True, iso_auto_after=AUTO_AFTER)
    late = dom0.guest("lab-late", "00:16:3e:1a:b1:03", "198.18.0.23", extra=NO_WAIT_ONLINE,
                      bridge=ISOLATED_BRIDGE)  # fmt: skip
    late.register()
    late.make_disk()
    create_all([late])
    domid = late.domid() or 0
    wait_for("the late guest configured by ISO",
             lambda: late.vm()["state"] in ("configured", "failed"), 400, 2.0)  # fmt: skip
    vm = late.vm()
    times = vm["state_times"]
    checks.report(
        "auto.configured", vm["state"] == "configured", f"{vm['state']}: {vm.get('message')}"
    )
    checks.report("auto.never_leased", "leased" not in times, f"state_times {sorted(times)}")
    if "fetched" in times:
        figure("fallback.auto_domain_to_attach", parse_time(times["fetched"]) - late.started)
    if "configured" in times:
        figure("fallback.auto_boot_to_configured", parse_time(times["configured"]) - late.started)
    wait_for("the late guest's ISO gone", lambda: not vbd_attached(late) and not isos(), 60)
    check_nothing_left(checks, "auto", late, domid)
    destroy([late])
    if checks.failures:
        dom0.diagnostics()
    return checks.failures == 0
