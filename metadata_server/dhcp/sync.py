"""Keeping the DHCP daemon in step with the registry.

Every change that matters to DHCP (not guest state reports) marks the configuration
dirty; after a short quiet time (`debounce`), one render covers every change since, so a
bulk import of 10,000 guests is one render, not 10,000. Each render is checked by the
daemon's own checker before anything is written; a refused configuration is never
written or reloaded: the last good one stays, and the error shows in the log and in
`status()`. Files that came out the same are neither rewritten nor reloaded. A guest
that cannot be reserved (see render.py) is left out of the files, named in `status()`
with the reason, and the rest go to the daemon as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from metadata_server.dhcp.daemons import Daemon
from metadata_server.dhcp.files import read_files, replace_files
from metadata_server.dhcp.render import DAEMON_FILES, DhcpPlan, LeftOut, render
from metadata_server.errors import MetadataError
from metadata_server.store.base import Change, ChangeEvent, Store

log = logging.getLogger(__name__)
MAX_LOGGED = 10  # left-out guests named in the log per change; the status has them all


@dataclass
class DhcpStatus:
    daemon: str
    directory: str
    ok: bool | None = None
    error: str | None = None
    guests: int = 0  # reservations in the files the daemon has
    left_out: list[dict[str, str]] = field(default_factory=list)  # {mac, address, reason}
    syncs: int = 0  # finished attempts, good or bad
    renders: int = 0
    writes: int = 0
    reloads: int = 0
    refusals: int = 0  # renders the daemon's checker refused
    last_attempt: float | None = None
    last_success: float | None = None
    managed_pid: int | None = None  # the dnsmasq the server runs itself, if it does
    managed_restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DhcpSync:
    def __init__(
        self,
        daemon: Daemon,
        directory: Path,
        plan: DhcpPlan,
        templates: jinja2.Environment,
        store: Store,
        *,
        host: str | None = None,
        debounce: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.daemon = daemon
        self.directory = directory
        self.plan = plan
        self.templates = templates
        self.store = store
        self.host = host
        self.debounce = debounce
        self._clock = clock
        self._names = DAEMON_FILES[daemon.name]
        self._dirty = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = asyncio.Lock()
        self.state = DhcpStatus(daemon=daemon.name, directory=str(directory))

    async def start(self) -> None:
        """Render once now (a failure is reported, not raised: guests are still served),
        then follow the registry."""
        await self.sync_now()
        self.follow()

    def follow(self) -> None:
        self._unsubscribe = self.store.subscribe(self._on_change)
        self._worker = asyncio.create_task(self._run(), name="dhcp-sync")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _on_change(self, changes: Sequence[Change]) -> None:
        if any(change.event != ChangeEvent.STATE for change in changes):
            self._dirty.set()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)  # let a burst of changes settle
            self._dirty.clear()
            await self.sync_now()

    async def sync_now(self) -> DhcpStatus:
        async with self._lock:
            self.state.last_attempt = self._clock()
            try:
                await self._sync()
            except MetadataError as exc:
                self._fail(exc.detail)
            except jinja2.TemplateError as exc:
                self._fail(f"the DHCP template is broken: {exc}")
            self.state.syncs += 1
            return self.state

    def _fail(self, reason: str) -> None:
        self.state.ok = False
        self.state.error = reason
        log.error("DHCP configuration not applied, the last good one stays: %s", reason)

    async def _sync(self) -> None:
        vms = await self.store.list(host=self.host)
        rendered = render(self.daemon.name, vms, self.plan, self.templates)
        files = rendered.files
        self.state.renders += 1
        current = read_files(self.directory, self._names)
        changed = {name for name in self._names if current is None or current[name] != files[name]}
        if changed:
            try:
                await self.daemon.check(files)
            except MetadataError:
                self.state.refusals += 1
                raise
            replace_files(self.directory, files)
            self.state.writes += 1
            await self.daemon.reload(changed)
            self.state.reloads += 1
            log.info(
                "DHCP: %d guests; wrote and reloaded %s", rendered.hosts, ", ".join(sorted(changed))
            )
        self._report_left_out(rendered.left_out)
        self.state.guests = rendered.hosts
        self.state.ok = True
        self.state.error = None
        self.state.last_success = self._clock()

    def _report_left_out(self, left_out: tuple[LeftOut, ...]) -> None:
        listed = [guest.to_json() for guest in left_out]
        if listed != self.state.left_out:  # once per change, not on every render
            for guest in left_out[:MAX_LOGGED]:
                log.warning(
                    "DHCP: guest %s (%s) left out: %s", guest.mac, guest.address, guest.reason
                )
            if len(left_out) > MAX_LOGGED:
                log.warning(
                    "DHCP: %d more guests left out (GET /api/v1/dhcp/status lists them)",
                    len(left_out) - MAX_LOGGED,
                )
        self.state.left_out = listed

    def status(self) -> DhcpStatus:
        return self.state
