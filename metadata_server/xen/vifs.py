"""Which running domain holds which MAC, from Dom0's vif backends in xenstore, for many
guests at once: one `xenstore-ls` of /local/domain/0/backend/vif instead of one per
guest (`XenHost.domid_for_mac` answers for a single MAC), and whether one named domain
carries a MAC (a read of that domain's backends only).

Reads only; decides nothing.
"""

from __future__ import annotations

import re

from metadata_server.xen.host import VIF_BACKENDS, XenHost

_VIF_MAC_RE = re.compile(rf"^{VIF_BACKENDS}/([0-9]+)/([0-9]+)/mac$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


async def domains_by_mac(xen: XenHost) -> dict[str, set[int]]:
    """MAC (lower case, colons) → the domids whose vifs carry it (normally one)."""
    values = await xen.xenstore.list_values(VIF_BACKENDS)
    found: dict[str, set[int]] = {}
    for path, value in (values or {}).items():
        match = _VIF_MAC_RE.fullmatch(path)
        if match is None or value is None:
            continue
        mac = value.strip().lower().replace("-", ":")
        if _MAC_RE.fullmatch(mac):
            found.setdefault(mac, set()).add(int(match.group(1)))
    return found


async def domain_has_mac(xen: XenHost, domid: int, mac: str) -> bool:
    """Whether a vif of domain `domid` carries `mac`: one read of that domain's vif
    backends, not of every domain's (what one ISO flow among hundreds needs)."""
    values = await xen.xenstore.list_values(f"{VIF_BACKENDS}/{domid}")
    for path, value in (values or {}).items():
        match = _VIF_MAC_RE.fullmatch(path)
        if match and value is not None and value.strip().lower().replace("-", ":") == mac:
            return True
    return False


async def vif_ports(xen: XenHost) -> dict[str, str]:
    """Dom0's bridge port of each vif (`vif<domid>.<devid>`, the name the hotplug script
    gives it) → the MAC its backend carries. Raises XenError when xenstore cannot be read."""
    values = await xen.xenstore.list_values(VIF_BACKENDS)
    ports: dict[str, str] = {}
    for path, value in (values or {}).items():
        match = _VIF_MAC_RE.match(path)
        if match is None or value is None:
            continue
        mac = value.strip().lower().replace("-", ":")
        if _MAC_RE.match(mac):
            ports[f"vif{match.group(1)}.{match.group(2)}"] = mac
    return ports
