"""Automatic ISO fallback: provision a guest by ISO when its domain runs but it has not
read its configuration within `after` seconds of its DHCP lease, or of its domain
appearing (its MAC on a vif in xenstore) when it never got a lease.

Watches the registry's change feed for which guests are still waiting (`registered` or
`leased`); every `interval` seconds one look at the vif backends says whose domains run.
Each guest gets one attempt per instance id: the attempt moves it to `fetched`, then
`configured` or `failed`, so it stops waiting; a re-arm makes it wait again. At most
`parallel` attempts run at once. The clock and the sleep are injected; tests call
`check()` directly.

Must not provision a guest that has fetched its configuration, nor one whose MAC is on
no vif (or on several).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from metadata_server.errors import MetadataError
from metadata_server.iso.provision import Provisioner
from metadata_server.iso.settings import AutoSettings
from metadata_server.model import VM, State
from metadata_server.store.base import Change
from metadata_server.xen.vifs import domains_by_mac

log = logging.getLogger(__name__)

WAITING_STATES = (State.REGISTERED, State.LEASED)


@dataclass
class _Waiting:
    instance_id: str
    state: State
    since: float | None  # the lease, or when its domain was first seen; None: not yet


class AutoFallback:
    def __init__(
        self,
        provisioner: Provisioner,
        settings: AutoSettings,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provisioner = provisioner
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._waiting: dict[str, _Waiting] = {}
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> dict[str, float | None]:
        """MAC → since when it waits (None: its domain was not seen yet)."""
        return {mac: entry.since for mac, entry in self._waiting.items()}

    async def start(self, *, run_loop: bool = True) -> None:
        registry = self.provisioner.registry
        self._unsubscribe = registry.subscribe(self._on_changes)
        for vm in await registry.list():
            self._consider(vm)
        if run_loop:
            self._loop = asyncio.create_task(self._run())
        log.info(
            "automatic ISO fallback after %g s; %d guests waiting",
            self.settings.after,
            len(self._waiting),
        )

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [task for task in (self._loop, *self._attempts.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None

    def _on_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.vm is None:
                self._waiting.pop(change.mac, None)
            else:
                self._consider(change.vm)

    def _consider(self, vm: VM) -> None:
        if vm.state not in WAITING_STATES:
            self._waiting.pop(vm.mac, None)
            return
        previous = self._waiting.get(vm.mac)
        if previous and (previous.instance_id, previous.state) == (vm.instance_id, vm.state):
            return  # an admin's edit: the clock keeps running
        since = vm.state_times.get(State.LEASED.value) if vm.state is State.LEASED else None
        self._waiting[vm.mac] = _Waiting(vm.instance_id, vm.state, since)

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except MetadataError as error:
                log.warning("automatic ISO fallback: %s", error.detail)
            await self._sleep(self.settings.interval)

    async def check(self) -> list[str]:
        """One look: start the attempts that are due; returns their MACs."""
        if not self._waiting:
            return []
        running = await domains_by_mac(self.provisioner.xen)
        now = self._clock()
        started = []
        for mac, entry in list(self._waiting.items()):
            domids = running.get(mac, set())
            if len(domids) != 1:
                if entry.state is State.REGISTERED:
                    entry.since = None  # not running (any more): wait for it to appear
                continue
            if entry.since is None:
                entry.since = now
                continue
            if now - entry.since < self.settings.after:
                continue
            if len(self._attempts) >= self.settings.parallel:
                break
            if self.provisioner.running(mac):
                continue
            del self._waiting[mac]
            (domid,) = domids
            started.append(mac)
            task = asyncio.create_task(self._attempt(mac, domid, now - entry.since))
            self._attempts[mac] = task
            task.add_done_callback(self._forget)
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        for mac, attempt in list(self._attempts.items()):
            if attempt is task:
                del self._attempts[mac]

    async def _attempt(self, mac: str, domid: int, late: float) -> None:
        log.warning(
            "guest %s has not fetched its configuration %.0f s after its lease or start; "
            "provisioning it by ISO on domain %s",
            mac,
            late,
            domid,
        )
        with contextlib.suppress(MetadataError):  # the flow logged it and set the state
            await self.provisioner.provision(mac, domid=domid)
