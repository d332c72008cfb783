"""The Xen side of the ISO fallback: attach and detach the ISO with `xl`, learn through
xenstore when the guest is done with it, and find a guest's domid from its MAC.

The guest's signal (the boot script's side of the contract)
------------------------------------------------------------
Dom0 creates `/local/domain/<domid>/data/metadata-init` before it attaches the ISO; only
that guest may write below it. The ISO carries a one-time nonce (`new_nonce()`: 32
lowercase hex digits). When the guest is done it writes ONE of, relative to its own
domain path, with the nonce read from the ISO:

    xenstore-write data/metadata-init/done "<nonce>"
    xenstore-write data/metadata-init/failed "<nonce> <reason>"

`done` holds exactly the nonce. `failed` holds the nonce, one space, then a free-text
reason (control characters are replaced, at most 500 characters are kept). Surrounding
whitespace is ignored. A value without the right nonce is ignored (logged once) and the
wait goes on, so a stale or forged value cannot end it; if both keys carry the nonce,
`failed` wins.

Dom0 watches the key with `xenstore-watch` and re-reads it on every event, because
watches fire once when set up and may fire spuriously. It also watches @releaseDomain:
when the guest dies xenstored deletes what the guest owned (its data/ directory, and so
the key) and the toolstack removes /local/domain/<domid>, so a vanished key ends the wait
(`GuestGone`); a timeout ends it too (`GuestSignalTimeout`, keys removed).

The flow is: prepare_signal → attach_iso → wait_for_signal → detach_iso (which also
removes the keys). Deleting the ISO file is the flow's job, not this module's.

Commands are argv lists with a timeout each; every failure is a `XenError` whose message
names the command and its stderr. This module never deletes files and never writes to a
guest's disk.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets

from metadata_server.errors import InvalidInput
from metadata_server.model import parse_mac, parse_message
from metadata_server.xen.commands import run_command
from metadata_server.xen.errors import (
    GuestGone,
    GuestReportedFailure,
    GuestSignalTimeout,
    XenCommandFailed,
    XenError,
)
from metadata_server.xen.settings import XenSettings
from metadata_server.xen.xenstore import XenstoreTools

log = logging.getLogger(__name__)

SIGNAL_KEY = "data/metadata-init"  # below /local/domain/<domid>
DONE = "done"
FAILED = "failed"
RELEASE_DOMAIN = "@releaseDomain"
VIF_BACKENDS = "/local/domain/0/backend/vif"
MAX_DOMID = 0x7FEF  # DOMID_FIRST_RESERVED - 1

_VDEV_RE = re.compile(r"^[a-z][a-z0-9]{1,15}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_VIF_MAC_RE = re.compile(rf"^{VIF_BACKENDS}/([0-9]+)/([0-9]+)/mac$")


def new_nonce() -> str:
    """A fresh signal nonce: 32 lowercase hex digits (128 random bits)."""
    return secrets.token_hex(16)


def _check_domid(domid: int) -> None:
    if isinstance(domid, bool) or not isinstance(domid, int) or not 0 < domid <= MAX_DOMID:
        raise InvalidInput(f"{domid!r} is not a guest domain id (1-{MAX_DOMID})", field="domid")


def _check_nonce(nonce: str) -> None:
    if not _NONCE_RE.fullmatch(nonce):
        raise InvalidInput("the nonce must be 32 lowercase hex digits", field="nonce")


class XenHost:
    """Dom0's handle on Xen for the ISO fallback."""

    def __init__(self, settings: XenSettings | None = None) -> None:
        self.settings = settings or XenSettings()
        self.slots = asyncio.Semaphore(self.settings.parallel_commands)
        self.xenstore = XenstoreTools(
            xenstored_path=self.settings.xenstored_path,
            bin_dir=self.settings.xenstore_bin_dir,
            timeout=self.settings.command_timeout,
            slots=self.slots,
        )

    @staticmethod
    def signal_path(domid: int) -> str:
        return f"/local/domain/{domid}/{SIGNAL_KEY}"

    # --- the block device --------------------------------------------------------------

    async def _xl(self, *args: str) -> None:
        # xl reaches xenstored through libxenstore too: same XENSTORED_PATH
        await run_command(
            [*self.settings.xl_command, *args],
            timeout=self.settings.command_timeout,
            env=self.xenstore.env,
            slots=self.slots,
        )

    def disk_spec(self, iso_path: str) -> str:
        """xl's disk specification for the ISO: a read-only CD-ROM; `target` comes last
        because xl reads the rest of the string as the path, commas and all."""
        return f"format=raw, vdev={self.settings.vdev}, access=ro, devtype=cdrom, target={iso_path}"

    async def attach_iso(self, domid: int, iso_path: str) -> None:
        """`xl block-attach <domid> '<disk spec>'`: the ISO appears in the guest as a CD."""
        _check_domid(domid)
        if not os.path.isabs(iso_path) or any(c in iso_path for c in "\0\n"):
            raise InvalidInput(f"{iso_path!r} is not an absolute path", field="iso_path")
        await self._xl("block-attach", str(domid), self.disk_spec(iso_path))
        log.info("attached %s to domain %s as %s", iso_path, domid, self.settings.vdev)

    async def detach_iso(self, domid: int) -> None:
        """`xl block-detach <domid> <vdev>`, then remove the signal keys."""
        _check_domid(domid)
        await self._xl("block-detach", str(domid), self.settings.vdev)
        log.info("detached %s from domain %s", self.settings.vdev, domid)
        await self.remove_signal(domid)

    # --- the signal ----------------------------------------------------------------------

    async def prepare_signal(self, domid: int) -> None:
        """Create the signal key so that the guest, and no other domain, may write it."""
        _check_domid(domid)
        if not await self.xenstore.exists(f"/local/domain/{domid}"):
            raise XenError(f"domain {domid} does not exist (no /local/domain/{domid})")
        path = self.signal_path(domid)
        await self.xenstore.rm(path)  # whatever an earlier attempt left
        await self.xenstore.write(path, "")
        # The first entry is the owner AND the default for every domain not listed:
        # "n0" makes Dom0 the owner (only the owner may change permissions, and Dom0 has
        # full access anyway) and denies everyone else reading and writing. "w<domid>"
        # then lets the guest write: create done/failed below (creating a node needs
        # write access to its nearest existing ancestor) but not read the key or change
        # its permissions. Values written before the guest has read the ISO cannot
        # carry the nonce, so a race with the guest here is harmless.
        await self.xenstore.chmod(path, "n0", f"w{domid}")

    async def remove_signal(self, domid: int) -> None:
        """Remove the signal keys; a domain that is already gone is fine."""
        _check_domid(domid)
        try:
            await self.xenstore.rm(self.signal_path(domid))
        except XenCommandFailed:
            if await self.xenstore.exists(f"/local/domain/{domid}/data"):
                raise

    async def wait_for_signal(self, domid: int, nonce: str, timeout: float) -> None:
        """Return when the guest writes `done` with `nonce`. Raises GuestReportedFailure
        (it wrote `failed`), GuestGone (it died) or GuestSignalTimeout (keys removed)."""
        _check_domid(domid)
        _check_nonce(nonce)
        seen: set[tuple[str, str]] = set()
        try:
            async with asyncio.timeout(timeout):
                async with self.xenstore.watch(self.signal_path(domid), RELEASE_DOMAIN) as watch:
                    while True:
                        event = await watch.next_event()
                        log.debug("domain %s: watch event on %s", domid, event)
                        if await self._signalled(domid, nonce, seen):
                            return
        except TimeoutError:
            try:
                await self.remove_signal(domid)
            except XenError as error:
                log.warning("domain %s: could not remove the signal keys: %s", domid, error)
            raise GuestSignalTimeout(
                f"domain {domid} did not signal on {self.signal_path(domid)} within {timeout:g} s"
            ) from None

    async def _signalled(self, domid: int, nonce: str, seen: set[tuple[str, str]]) -> bool:
        path = self.signal_path(domid)
        values = await self.xenstore.list_values(path)
        if values is None:
            if not await self.xenstore.exists(f"/local/domain/{domid}"):
                raise GuestGone(f"domain {domid} died or was destroyed while Dom0 waited")
            raise GuestGone(
                f"domain {domid}'s signal key {path} vanished "
                "(its data/ directory was removed: the guest is gone or deleted the key)"
            )
        failed = (values.get(f"{path}/{FAILED}") or "").strip()
        if failed:
            given, _, reason = failed.partition(" ")
            if hmac.compare_digest(given.encode(), nonce.encode()):
                raise GuestReportedFailure(domid, parse_message(reason))
            self._ignore(domid, FAILED, failed, seen)
        done = (values.get(f"{path}/{DONE}") or "").strip()
        if done:
            if hmac.compare_digest(done.encode(), nonce.encode()):
                log.info("domain %s signalled done", domid)
                return True
            self._ignore(domid, DONE, done, seen)
        return False

    @staticmethod
    def _ignore(domid: int, key: str, value: str, seen: set[tuple[str, str]]) -> None:
        if (key, value) not in seen:
            seen.add((key, value))
            log.warning("domain %s wrote %s without the expected nonce; still waiting", domid, key)

    # --- who is who ----------------------------------------------------------------------

    async def vif_macs(self) -> set[str]:
        """The MAC of every vif backend on this Dom0 (running domains, whoever made them)."""
        values = await self.xenstore.list_values(VIF_BACKENDS)
        return {
            value.strip().lower()
            for path, value in (values or {}).items()
            if value is not None and _VIF_MAC_RE.fullmatch(path)
        }

    async def domid_for_mac(self, mac: str) -> int | None:
        """The domain whose vif has `mac`, from Dom0's vif backends
        (/local/domain/0/backend/vif/<domid>/<devid>/mac); None if no vif has it."""
        wanted = parse_mac(mac)
        values = await self.xenstore.list_values(VIF_BACKENDS)
        if values is None:
            return None
        domids = set()
        for path, value in values.items():
            match = _VIF_MAC_RE.fullmatch(path)
            if match and value is not None and value.strip().lower() == wanted:
                domids.add(int(match.group(1)))
        if len(domids) > 1:
            raise XenError(f"MAC {wanted} is on vifs of several domains: {sorted(domids)}")
        return domids.pop() if domids else None
