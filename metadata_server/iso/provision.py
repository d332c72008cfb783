"""The ISO fallback flow for one guest, from the record to a configured guest.

`Provisioner.provision(mac)`: look up the record, find its domain (the vif that carries
its MAC, or the domid given, checked against that vif), build its ISO with a fresh
nonce, write it (0600, in the 0700 ISO directory), create the signal key, attach the
ISO, and wait until the guest writes the nonce back (xen.py describes the signal); then
detach, remove the keys and delete the ISO. The record moves through the same states as
on the network path: `fetched` once the ISO is attached, then `configured`, or `failed`
with the reason (timeout, guest gone, the guest's own report, xl failing, no such
domain, an unwritable ISO directory, a full disk, the server shutting down).

Nothing is left behind on any path: the ISO and the keys are removed in `finally`
blocks, also when the flow is cancelled (`close()` at server shutdown). A crash can
still leave an ISO, an attachment or keys; `cleanup_leftovers()` (leftovers.py) removes
them and must run once at start, before the first provision.

While the ISO is attached the record is watched: a guest that reports over the network
after all (it reached the guest API), a re-arm (the ISO is stale) or a deletion ends the
wait early; the first leaves the state as the guest reported it.

Runs each flow as its own task, so an HTTP client that goes away does not cut a flow
short; one flow per guest and per domain at a time. Never logs the nonce or anything
from the guest's documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions, guest_view
from metadata_server.errors import ErrorCode, InvalidInput, MetadataError, NotFound, Unavailable
from metadata_server.iso.directory import IsoDirectory, IsoStoreError
from metadata_server.iso.layout import config_iso
from metadata_server.iso.leftovers import CleanupReport, cleanup_leftovers
from metadata_server.iso.settings import (  # noqa: F401 (also imported from here)
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    Layout,
    ProvisionSettings,
    parse_layout,
)
from metadata_server.model import VM, State, parse_message
from metadata_server.registry import Registry
from metadata_server.xen.errors import XenCommandFailed, XenError
from metadata_server.xen.host import MAX_DOMID, XenHost, new_nonce
from metadata_server.xen.vifs import domain_has_mac, domains_by_mac

log = logging.getLogger(__name__)


class ProvisionConflict(MetadataError):
    """The guest cannot be provisioned now: a flow already runs for it or its domain,
    or it is configured already (re-arm it first). Changes nothing."""

    http_status = 409
    code = ErrorCode.ISO_CONFLICT


class NoSuchDomain(NotFound):
    """No running domain carries the guest's MAC, or the domain named does not exist."""

    code = ErrorCode.NO_SUCH_DOMAIN


class WrongDomain(InvalidInput):
    """The domain named is not the guest's: the guest's MAC is on another domain's vif."""

    code = ErrorCode.WRONG_DOMAIN


@dataclass(frozen=True)
class ProvisionResult:
    vm: VM  # the record at the end (configured, or as the guest reported over the network)
    domid: int
    layout: Layout
    detail: str


@dataclass(frozen=True)
class BuiltIso:
    vm: VM
    nonce: str
    layout: Layout
    data: bytes


class _RecordWatch:
    """Resolves when the record changes under a running flow (see the module docstring):
    it is deleted, re-armed, or the guest reports its state by itself."""

    def __init__(self, registry: Registry, vm: VM) -> None:
        self.vm = vm
        self.changed: asyncio.Task[VM | None] = asyncio.create_task(
            registry.wait(vm.mac, self._ends_the_flow, timeout=None)
        )

    def _ends_the_flow(self, record: VM | None) -> bool:
        if record is None or record.instance_id != self.vm.instance_id:
            return True
        # A report since the flow began (a failed guest may be provisioned again).
        state = record.state
        reported = state in (State.CONFIGURED, State.FAILED)
        return reported and record.state_times.get(state) != self.vm.state_times.get(state)

    def outcome(self) -> tuple[str, VM | None]:
        record = self.changed.result()
        if record is None:
            return "deleted", None
        return ("rearmed" if record.instance_id != self.vm.instance_id else "reported"), record

    def close(self) -> None:
        self.changed.cancel()


class Provisioner:
    def __init__(
        self,
        registry: Registry,
        xen: XenHost,
        isos: IsoDirectory,
        documents: DocumentOptions,
        cloud: CloudOptions | None = None,
        settings: ProvisionSettings | None = None,
    ) -> None:
        self.registry = registry
        self.xen = xen
        self.isos = isos
        self.documents = documents
        self.cloud = cloud or CloudOptions()
        self.settings = settings or ProvisionSettings()
        self._flows: dict[str, asyncio.Task[ProvisionResult]] = {}
        self._domids: set[int] = set()
        self._closed = False
        # (outcome, seconds) of every flow that ran: for /metrics
        self.on_flow: Callable[[str, float], None] | None = None

    # --- arguments ----------------------------------------------------------------------

    def check_arguments(
        self, domid: object, timeout: object, layout: object
    ) -> tuple[int | None, float, Layout]:
        """Validated (domid, timeout, layout), defaults filled in; InvalidInput otherwise."""
        if domid is not None and (
            isinstance(domid, bool) or not isinstance(domid, int) or not 0 < domid <= MAX_DOMID
        ):
            raise InvalidInput(f"domid must be a guest domain id (1-{MAX_DOMID})", field="domid")
        if timeout is None:
            timeout = self.settings.default_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidInput("timeout must be a number of seconds", field="timeout")
        if not 0 < timeout <= self.settings.max_timeout:
            raise InvalidInput(
                f"timeout must be more than 0 and at most {self.settings.max_timeout:g} s",
                field="timeout",
            )
        chosen = self.settings.layout if layout is None else parse_layout(layout)
        return domid, float(timeout), chosen

    # --- the image alone ----------------------------------------------------------------

    async def build(self, mac: str, layout: object = None) -> BuiltIso:
        """The guest's ISO with a fresh nonce, for an admin to attach by hand. Changes
        nothing."""
        _, _, chosen = self.check_arguments(None, None, layout)
        vm = await self.registry.get(mac)
        nonce = new_nonce()
        data = config_iso(guest_view(vm, self.documents), nonce, chosen, self.cloud)
        return BuiltIso(vm, nonce, chosen, data)

    # --- the flow -----------------------------------------------------------------------

    def running(self, mac: str) -> bool:
        return mac in self._flows

    async def provision(
        self,
        mac: str,
        *,
        domid: object = None,
        timeout: object = None,
        layout: object = None,
    ) -> ProvisionResult:
        """Run the whole flow for one guest and return when it is over."""
        the_domid, the_timeout, the_layout = self.check_arguments(domid, timeout, layout)
        if self._closed:
            raise Unavailable("the server is shutting down")
        vm = await self.registry.get(mac)
        if self._closed:
            raise Unavailable("the server is shutting down")
        if vm.mac in self._flows:
            raise ProvisionConflict(f"guest {vm.mac} is being provisioned already", field="mac")
        if vm.state is State.CONFIGURED:
            raise ProvisionConflict(
                f"guest {vm.mac} is configured already; re-arm it to configure it again",
                field="mac",
            )
        task = asyncio.create_task(self._flow(vm, the_domid, the_timeout, the_layout))
        self._flows[vm.mac] = task
        task.add_done_callback(lambda _: self._flows.pop(vm.mac, None))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise Unavailable(
                    f"the server shut down while provisioning {vm.mac}; its ISO was removed"
                ) from None
            raise

    async def _flow(
        self, vm: VM, domid: int | None, timeout: float, layout: Layout
    ) -> ProvisionResult:
        started, outcome = time.monotonic(), "cancelled"
        try:
            result = await self._flow_steps(vm, domid, timeout, layout)
            outcome = "configured" if result.vm.state is State.CONFIGURED else "reported"
            return result
        except MetadataError as error:
            outcome = str(error.code)
            raise
        except Exception:
            outcome = "internal"
            raise
        finally:
            if self.on_flow is not None:
                self.on_flow(outcome, time.monotonic() - started)

    async def _flow_steps(
        self, vm: VM, domid: int | None, timeout: float, layout: Layout
    ) -> ProvisionResult:
        try:
            the_domid = await self._domain_of(vm.mac, domid)
            if the_domid in self._domids:
                raise ProvisionConflict(
                    f"domain {the_domid} is being provisioned already", field="domid"
                )
            self._domids.add(the_domid)
            try:
                return await self._deliver(vm, the_domid, timeout, layout)
            finally:
                self._domids.discard(the_domid)
        except ProvisionConflict:
            raise
        except asyncio.CancelledError:
            await self._fail(vm.mac, "the server shut down during the ISO fallback")
            raise
        except MetadataError as error:
            await self._fail(vm.mac, error.detail)
            raise
        except Exception:
            log.exception("provisioning %s by ISO failed unexpectedly", vm.mac)
            await self._fail(vm.mac, "internal error; see the server log")
            raise

    async def _domain_of(self, mac: str, domid: int | None) -> int:
        if domid is not None and await domain_has_mac(self.xen, domid, mac):
            return domid  # the named domain carries the MAC (and so exists)
        holders = (await domains_by_mac(self.xen)).get(mac, set())
        if len(holders) > 1:
            raise XenError(f"MAC {mac} is on vifs of several domains: {sorted(holders)}")
        found = next(iter(holders), None)
        if domid is None:
            if found is None:
                raise NoSuchDomain(f"no running domain has a vif with MAC {mac}", field="mac")
            domid = found
        elif found is not None and found != domid:
            raise WrongDomain(
                f"MAC {mac} is on a vif of domain {found}, not of domain {domid}", field="domid"
            )
        elif found is None:
            log.warning("no vif carries %s; using domain %s as the admin said", mac, domid)
        if not await self.xen.xenstore.exists(f"/local/domain/{domid}"):
            raise NoSuchDomain(f"domain {domid} does not exist", field="domid")
        return domid

    async def _deliver(self, vm: VM, domid: int, timeout: float, layout: Layout) -> ProvisionResult:
        nonce = new_nonce()
        image = config_iso(guest_view(vm, self.documents), nonce, layout, self.cloud)
        path = await asyncio.to_thread(self.isos.write, domid, vm.mac, image)
        watch = _RecordWatch(self.registry, vm)
        attached: bool | None = False  # None: unknown (xl was cut short)
        try:
            await self.xen.prepare_signal(domid)
            attached = None
            try:
                await self.xen.attach_iso(domid, str(path))
            except XenCommandFailed as error:
                if error.returncode is not None:
                    attached = False  # xl said no; a disk at that vdev may be someone else's
                raise
            attached = True
            if not watch.changed.done():  # re-armed or deleted meanwhile: not for this ISO
                await self.registry.mark_fetched(vm.mac)
            log.info("guest %s: ISO (%s) attached to domain %s; waiting", vm.mac, layout, domid)
            how, changed = await self._wait(domid, nonce, timeout, watch)
        finally:
            watch.close()
            problem = await self._undo(domid, attached)
            await self._remove_iso(path)
        if how == "reported" and changed is not None:
            log.info("guest %s reported %s over the network", vm.mac, changed.state)
            return ProvisionResult(changed, domid, layout, "the guest reported over the network")
        if how == "deleted":
            raise NotFound(f"guest {vm.mac} was deleted while its ISO was attached", field="mac")
        if how == "rearmed":
            raise ProvisionConflict(
                f"guest {vm.mac} was re-armed while its ISO was attached; provision it again",
                field="mac",
            )
        detail = f"configured from the ISO on domain {domid}"
        if problem:
            detail += f"; {problem}"
        done = await self.registry.set_state(vm.mac, State.CONFIGURED, parse_message(detail))
        log.info("guest %s: %s", vm.mac, detail)
        return ProvisionResult(done, domid, layout, detail)

    async def _wait(
        self, domid: int, nonce: str, timeout: float, watch: _RecordWatch
    ) -> tuple[str, VM | None]:
        signal = asyncio.create_task(self.xen.wait_for_signal(domid, nonce, timeout))
        either: set[asyncio.Future[Any]] = {signal, watch.changed}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not signal.done():
                signal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await signal
        if signal.done() and not signal.cancelled():
            signal.result()  # raises what the guest did wrong
            return "signalled", None
        return watch.outcome()

    async def _undo(self, domid: int, attached: bool | None) -> str | None:
        """Detach (if attached, or if that is unknown) and remove the keys; never raises,
        returns the problem."""
        problem = None
        if attached is not False:
            try:
                await self.xen.detach_iso(domid)
            except XenError as error:
                if attached:
                    problem = f"detaching the ISO failed: {error.detail}"
                    log.error("domain %s: %s", domid, problem)
                else:
                    log.info("domain %s: nothing to detach (%s)", domid, error.detail)
        try:
            await self.xen.remove_signal(domid)
        except XenError as error:
            log.error("domain %s: could not remove the signal keys: %s", domid, error.detail)
        return problem

    async def _remove_iso(self, path: Path) -> None:
        try:
            await asyncio.to_thread(self.isos.remove, path)
        except IsoStoreError as error:
            log.error("%s (removed at the next start)", error.detail)

    async def _fail(self, mac: str, reason: str) -> None:
        message = parse_message(f"ISO fallback: {reason}")
        log.warning("guest %s: %s", mac, message)
        try:
            await self.registry.set_state(mac, State.FAILED, message)
        except MetadataError as error:
            log.warning("guest %s: could not record the failure: %s", mac, error.detail)

    async def close(self) -> None:
        """Stop every running flow (each cleans up after itself) and refuse new ones."""
        self._closed = True
        flows = list(self._flows.values())
        for flow in flows:
            flow.cancel()
        await asyncio.gather(*flows, return_exceptions=True)

    # --- after a crash ------------------------------------------------------------------

    async def cleanup_leftovers(self) -> CleanupReport:
        """What `leftovers.cleanup_leftovers` does, for this Provisioner's Xen and ISO
        directory. Call once at start, before any provision."""
        return await cleanup_leftovers(self.xen, self.isos)
