"""Remove what a crashed or killed server left of the ISO fallback, at its next start.

A flow removes its ISO, its attachment and its signal keys on every path it can see
(provision.py); a SIGKILL or a power cut is the one it cannot. Then, at the next start:

- each ISO in the ISO directory (its name says `<domid>-<mac>`) is detached from its
  domain first, when that domain still carries that MAC on a vif (domids are not reused
  soon, but a MAC check costs nothing), then deleted; a partial write is just deleted;
- every `/local/domain/<domid>/data/metadata-init` key is removed (one `xenstore-ls`
  finds them all).

Without an ISO directory the fallback never ran on this host: nothing is done, so a
host without Xen runs no Xen command. Failures are logged, never raised: a start must
not fail because a guest is gone. Never touches a file that is not named like an ISO.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field

from metadata_server.iso.directory import IsoDirectory, IsoStoreError
from metadata_server.xen.errors import XenError
from metadata_server.xen.host import MAX_DOMID, SIGNAL_KEY, XenHost
from metadata_server.xen.vifs import domains_by_mac

log = logging.getLogger(__name__)

_SIGNAL_PATH_RE = re.compile(rf"^/local/domain/([0-9]+)/{SIGNAL_KEY}$")


@dataclass
class CleanupReport:
    isos: list[str] = field(default_factory=list)  # files removed
    detached: list[int] = field(default_factory=list)  # domains whose ISO was detached
    keys: list[int] = field(default_factory=list)  # domains whose signal keys were removed


async def cleanup_leftovers(xen: XenHost, isos: IsoDirectory) -> CleanupReport:
    report = CleanupReport()
    if not await asyncio.to_thread(isos.path.exists):
        return report
    try:
        files = await asyncio.to_thread(isos.files)
    except IsoStoreError as error:
        log.error("%s", error.detail)
        files = []
    holders: dict[str, set[int]] = {}
    if files:
        try:
            holders = await domains_by_mac(xen)
        except XenError as error:
            log.error("cannot read the vif backends: %s", error.detail)
    for item in files:
        if not item.partial and holders.get(item.mac) == {item.domid}:
            try:
                await xen.detach_iso(item.domid)
                report.detached.append(item.domid)
            except XenError as error:  # most often: it was not attached any more
                log.info("domain %s: no ISO to detach (%s)", item.domid, error.detail)
        try:
            await asyncio.to_thread(isos.remove, item.path)
            report.isos.append(item.path.name)
        except IsoStoreError as error:
            log.error("%s", error.detail)
    for domid in await _domains_with_signal_keys(xen):
        try:
            await xen.remove_signal(domid)
            report.keys.append(domid)
        except XenError as error:
            log.error("domain %s: could not remove the signal keys: %s", domid, error.detail)
    if report.isos or report.keys:
        log.warning(
            "removed leftovers of an earlier run: ISOs %s, detached from domains %s, "
            "signal keys of domains %s",
            report.isos,
            report.detached,
            report.keys,
        )
    return report


async def _domains_with_signal_keys(xen: XenHost) -> list[int]:
    try:
        values = await xen.xenstore.list_values("/local/domain")
    except XenError as error:
        log.error("cannot look for stale signal keys: %s", error.detail)
        return []
    domids = set()
    for path in values or {}:
        match = _SIGNAL_PATH_RE.fullmatch(path)
        if match and 0 < int(match.group(1)) <= MAX_DOMID:
            domids.add(int(match.group(1)))
    return sorted(domids)
