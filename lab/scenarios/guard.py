"""The hook for the bridge guard (issue 13) in the network scenario.

The guard does not exist yet. When the server answers `GET /api/v1/guard`, this is
where the lab asserts it on the real vifs: one rule set on xenbr0, each guest's port
(`vif<domid>.0`, from xenstore) bound to its MAC and its reserved address. Until then the
check is reported as SKIP, so the lab's output says plainly that it was not verified.
"""

from __future__ import annotations

from lab.scenarios.common import Checks, Guest, admin


def check(checks: Checks, guests: list[Guest]) -> None:
    status, body = admin("GET", "/api/v1/guard")
    if status == 404:
        checks.skip("guard", "the server has no bridge guard yet (GET /api/v1/guard is 404)")
        return
    checks.report("guard.enabled", status == 200 and bool(body), f"GET /api/v1/guard: {status}")
    # TODO(issue 13): per guest, the vif port and the MAC/IP binding in the guard's rules.
