"""The DNS responder as one part of the server: zone from the registry, endpoints, upstreams.

`DnsService(settings, store, default_domain)` builds the Zone from `store.list()`, keeps
it current from the store's change feed (each committed batch gives the next Zone, so a
registry change shows in the very next answer), and runs the endpoints. The app starts
and stops it; it reads no configuration itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from metadata_server.dns.server import DnsServer
from metadata_server.dns.settings import DnsSettings, Endpoint
from metadata_server.dns.upstream import Forwarder
from metadata_server.dns.zone import Zone
from metadata_server.model import VM
from metadata_server.store.base import Change, ChangeListener

log = logging.getLogger(__name__)


class RecordFeed(Protocol):
    """What the DNS needs of a store (every `Store` is one)."""

    async def list(self) -> list[VM]: ...

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]: ...


class DnsService:
    def __init__(
        self,
        settings: DnsSettings,
        store: RecordFeed,
        default_domain: str | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._store = store
        self._default_domain = default_domain
        self._clock = clock
        self._zone: Zone | None = None
        self._pending: list[Change] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._server: DnsServer | None = None

    @property
    def zone(self) -> Zone:
        if self._zone is None:
            raise RuntimeError("the DNS service is not started")
        return self._zone

    @property
    def addresses(self) -> tuple[Endpoint, ...]:
        """The bound (host, port) of each listen address, UDP and TCP alike."""
        return tuple(self._server.addresses) if self._server is not None else ()

    async def start(self) -> None:
        settings = self.settings
        # Subscribe before listing: a change committed while the list is read is held
        # and applied after it (applying one twice does no harm).
        self._unsubscribe = self._store.subscribe(self._on_changes)
        try:
            vms = await self._store.list()
            zone = Zone.build(vms, settings, self._default_domain, serial=int(self._clock()))
            self._zone = zone.with_changes(self._pending)
            self._pending.clear()
            forwarder = (
                Forwarder(settings.upstreams, settings.upstream_timeout)
                if settings.upstreams
                else None
            )
            self._server = DnsServer(settings, lambda: self.zone, forwarder)
            await self._server.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "DNS for %s (%d guests) on %s; %s",
            settings.zone,
            len(self.zone.guests),
            ", ".join(f"{host}:{port}" for host, port in self.addresses),
            "forwarding to " + ", ".join(f"{host}:{port}" for host, port in settings.upstreams)
            if settings.upstreams
            else "refusing other names",
        )

    def _on_changes(self, changes: Sequence[Change]) -> None:
        if self._zone is None:
            self._pending.extend(changes)
            return
        zone = self._zone.with_changes(changes)
        if zone is not self._zone:
            log.debug("zone %s serial %d: %d guests", zone.origin, zone.serial, len(zone.guests))
        self._zone = zone

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._server is not None:
            await self._server.stop()
            self._server = None
