"""The bridge guard as one part of the server: its nftables table on the Dom0 bridge, kept
in step with the registry, the bridge's ports and Xen's vifs, and its drop counters.

`start()` replaces any table a crashed run left with a whole new one (one transaction)
and refuses to start when nft or the kernel's nf_tables bridge support is missing.
After that, a registry change, a link event on the host, or every `refresh` seconds
marks the plan dirty; after `debounce` seconds of quiet the sets are replaced as one
transaction when the plan changed (a burst of 1,000 registrations is one `nft` run). A
batch the kernel refuses leaves the previous rules in place and shows in `status()`.
Every `COUNTER_INTERVAL` seconds the drop counters are read; a sender whose drops grew
is logged at most once a minute. `stop()` removes the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metadata_server.errors import ConfigError
from metadata_server.guard.nft import DropCounts, Nft, NftError
from metadata_server.guard.rules import (
    GuardPlan,
    delete_commands,
    plan,
    table_commands,
    table_name,
    update_commands,
)
from metadata_server.guard.settings import GuardSettings
from metadata_server.netlink import BridgeAddressError, BridgePorts
from metadata_server.snapshot import GuestSnapshot
from metadata_server.store.base import Change, ChangeEvent, Store
from metadata_server.xen.errors import XenError
from metadata_server.xen.host import XenHost
from metadata_server.xen.vifs import vif_ports

log = logging.getLogger(__name__)
COUNTER_INTERVAL = 10.0
LOG_EVERY = 60.0
TURN_OFF = "set guard.enabled = false to run without the bridge guard (see the README)"


@dataclass
class GuardStatus:
    bridge: str
    table: str
    ok: bool | None = None
    error: str | None = None
    guests: int = 0
    ports: dict[str, str | None] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    applies: int = 0
    last_applied: float | None = None
    xen: bool = False
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    unregistered_drops: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "bridge": self.bridge,
            "table": self.table,
            "ok": self.ok,
            "error": self.error,
            "guests": self.guests,
            "ports": dict(sorted(self.ports.items())),
            "left_out": list(self.left_out),
            "applies": self.applies,
            "last_applied": self.last_applied,
            "xen_vifs": self.xen,
            "drops": {sender: dict(kinds) for sender, kinds in sorted(self.drops.items())},
            "unregistered_drops": self.unregistered_drops,
        }


class BridgeGuard:
    def __init__(
        self,
        settings: GuardSettings,
        bridge: str,
        snapshot: GuestSnapshot,
        store: Store,
        *,
        dom0_addresses: Iterable[str],
        xen: XenHost | None = None,
        nft: Nft | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bridge = bridge
        self.snapshot = snapshot
        self.store = store
        self.xen = xen
        self.nft = nft or Nft(settings.nft_command)
        self._clock = clock
        self._dom0 = frozenset(dom0_addresses)
        self._ports = BridgePorts(bridge)
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._applied: GuardPlan | None = None
        self._xen_ports: dict[str, str] | None = None
        self._xen_error: str | None = None
        self._drops: DropCounts | None = None
        self._logged: dict[str, float] = {}
        self.status = GuardStatus(bridge=bridge, table=table_name(bridge))

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not self.nft.available():
            raise ConfigError(
                f"the bridge guard needs nft (Debian: apt-get install nftables); {TURN_OFF}"
            )
        try:
            await self._ports.start()
            first = await self._plan()
        except BridgeAddressError as exc:
            await self._ports.stop()
            raise ConfigError(f"guard: {exc}") from None
        try:
            await self.nft.apply(table_commands(first))
        except NftError as exc:
            await self._ports.stop()
            raise ConfigError(
                f"the kernel refused the bridge guard's nftables rules on {self.bridge} "
                f"(is nf_tables bridge support missing?): {exc}; {TURN_OFF}"
            ) from None
        self._applied = first
        self._record(first)
        self._unsubscribe = self.store.subscribe(self._on_changes)
        self._tasks = [
            asyncio.create_task(self._keep_current(), name="guard-sync"),
            asyncio.create_task(self._watch_counters(), name="guard-counters"),
        ]
        log.info(
            "bridge guard on %s: %d guests, %d guest ports",
            self.bridge,
            len(first.guests),
            len(first.guest_ports),
        )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._ports.stop()
        if self._applied is not None:
            try:
                await self.nft.apply(delete_commands(self.bridge))
            except NftError as exc:
                log.error("could not remove the bridge guard's table: %s", exc)
            self._applied = None

    # --- keeping the sets current -------------------------------------------------------

    def _on_changes(self, changes: Sequence[Change]) -> None:
        if any(change.event != ChangeEvent.STATE for change in changes):
            self._dirty.set()

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def _keep_current(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.refresh):
                    await _first_of(self._dirty, self._ports.changed)
            await asyncio.sleep(self.settings.debounce)
            self._dirty.clear()
            self._ports.changed.clear()
            await self.sync()

    async def sync(self) -> None:
        """Look again at guests and ports; replace the sets when the plan changed."""
        try:
            fresh = await self._plan()
        except BridgeAddressError as exc:
            self.status.ok, self.status.error = False, str(exc)
            log.error("bridge guard: %s", exc)
            return
        if self._applied is None or fresh == self._applied:
            return
        try:
            commands = update_commands(self._applied, fresh)
            if commands:
                await self.nft.apply(commands)
        except NftError as first:
            # Someone may have changed or removed the table: put the whole table back.
            try:
                await self.nft.apply(table_commands(fresh))
            except NftError as exc:
                # The previous rules stay in force (nft applies all of a batch or none):
                # the guard is stale, not open.
                self.status.ok, self.status.error = False, f"the kernel refused an update: {exc}"
                log.error("bridge guard: nft refused an update; the previous rules stay: %s", exc)
                return
            log.warning("bridge guard: the table on %s was replaced whole (%s)", self.bridge, first)
        self._applied = fresh
        self._record(fresh)

    async def _plan(self) -> GuardPlan:
        ports = await self._ports.ports()
        bindings = dict(self.settings.ports)
        strict: tuple[str, ...] = ()
        xen_ports = await self._read_xen()
        if xen_ports is not None:
            bindings.update(xen_ports)
            strict = ("vif*",)  # on Xen every vif's MAC is known: unknown means not yet
        return plan(
            self.bridge,
            self.snapshot.reservations(),
            ports=ports,
            patterns=self.settings.guest_ports,
            bindings=bindings,
            strict_patterns=strict,
            dom0_addresses=self._dom0 | set(await self._ports.addresses()),
        )

    async def _read_xen(self) -> dict[str, str] | None:
        """The vifs' MACs from xenstore; the last good answer when it cannot be read now
        (so a xenstore hiccup never locks every guest out); None off Xen."""
        if self.xen is None:
            return None
        try:
            self._xen_ports = await vif_ports(self.xen)
            self._xen_error = None
        except XenError as exc:
            if self._xen_error is None:
                log.info("bridge guard: no vif bindings from xenstore: %s", exc)
            self._xen_error = str(exc)
        return self._xen_ports

    def _record(self, applied: GuardPlan) -> None:
        status = self.status
        status.ok, status.error = True, None
        status.guests = len(applied.guests)
        status.ports = {port: applied.bindings.get(port) for port in applied.guest_ports}
        status.left_out = list(applied.left_out)
        status.applies += 1
        status.last_applied = self._clock()
        status.xen = self._xen_ports is not None

    # --- counters -----------------------------------------------------------------------

    async def _watch_counters(self) -> None:
        while True:
            await asyncio.sleep(COUNTER_INTERVAL)
            await self.read_counters()

    async def read_counters(self) -> None:
        try:
            counts = await self.nft.drop_counts(self.bridge)
        except NftError as exc:
            log.warning("bridge guard: cannot read the drop counters: %s", exc)
            return
        previous = self._drops
        self._drops = counts
        drops: dict[str, dict[str, int]] = {}
        for kind, senders in counts.by_kind.items():
            for sender, packets in senders.items():
                drops.setdefault(sender, {})[kind] = packets
                before = previous.by_kind.get(kind, {}).get(sender, 0) if previous else 0
                if packets > before:
                    self._say_once(sender, kind, packets - before)
        if previous is not None and counts.unregistered > previous.unregistered:
            self._say_once(
                "unregistered", "unregistered", counts.unregistered - previous.unregistered
            )
        self.status.drops = drops
        self.status.unregistered_drops = counts.unregistered

    def _say_once(self, sender: str, kind: str, packets: int) -> None:
        now = time.monotonic()
        if now - self._logged.get(sender, -LOG_EVERY) < LOG_EVERY:
            return
        self._logged[sender] = now
        log.warning(
            "bridge guard on %s dropped %d frames from %s (%s); said once a minute",
            self.bridge,
            packets,
            sender,
            kind,
        )


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
