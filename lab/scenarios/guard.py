"""The bridge guard (issue 13) on real Xen, in the network scenario.

Run once the guests are configured (so the guard let everything they need through): the
server's `GET /api/v1/guard` must report its rules applied on xenbr0 with the vifs read
from xenstore, each guest's port (`vif<domid>.0`, the name the real toolstack gave it)
bound to that guest's MAC, and the table must be in the kernel (`nft list table`).
"""

from __future__ import annotations

from lab.scenarios.common import Checks, Guest, admin, run


def check(checks: Checks, guests: list[Guest]) -> None:
    status, body = admin("GET", "/api/v1/guard")
    if status != 200 or not isinstance(body, dict):
        checks.report("guard.status", False, f"GET /api/v1/guard: {status}")
        return
    checks.report(
        "guard.applied",
        body.get("enabled") is True and body.get("ok") is True and body.get("xen_vifs") is True,
        f"enabled {body.get('enabled')}, ok {body.get('ok')}, xen_vifs {body.get('xen_vifs')}, "
        f"error {body.get('error')}",
    )
    ports = body.get("ports") or {}
    for guest in guests:
        domid = guest.domid()
        port = f"vif{domid}.0"
        bound = ports.get(port)
        checks.report(
            f"guard.{guest.name}.port",
            domid is not None and bound is not None and bound.lower() == guest.mac.lower(),
            f"{port} bound to {bound} (guest MAC {guest.mac})",
        )
    table = str(body.get("table") or "")
    listed = run(["nft", "list", "table", "bridge", table], check=False)
    checks.report(
        "guard.table", listed.returncode == 0 and bool(table), f"nft list table bridge {table}"
    )
