"""The composition root: builds the store, registry, snapshot and both HTTP apps, starts
their listeners, and stops everything in reverse order.

Nothing else in the package wires parts together; tests use `MetadataService` with
`:0` ports and read the bound addresses back.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from metadata_server.admin_token import ensure_server_token
from metadata_server.cloud.options import CloudOptions
from metadata_server.config import ListenAddress, Settings
from metadata_server.dhcp.service import DhcpService, dhcp_networks
from metadata_server.dns.service import DnsService
from metadata_server.documents import DocumentOptions
from metadata_server.errors import ConfigError
from metadata_server.guard.service import BridgeGuard
from metadata_server.http.admin import make_admin_app
from metadata_server.http.cloud import add_routes as add_cloud_routes
from metadata_server.http.connections import ConnectionCounter, ConnectionLimits, GuardedTCPSite
from metadata_server.http.guard import GUARD, GUARD_OFF, OFF_WARNING
from metadata_server.http.guest import GuestAccess, SessionTokens, make_guest_app
from metadata_server.http.iso import PROVISIONER
from metadata_server.http.keys import (
    ACCESS,
    CLOCK,
    CLOUD_OPTIONS,
    DHCP,
    IDENTITY,
    REGISTRY,
    SETTINGS,
    SIGNER,
    SNAPSHOT,
    TOKEN_SECRET,
)
from metadata_server.http.launch import LAUNCHER
from metadata_server.http.metrics import METRICS
from metadata_server.identity import IdentityPolicy, IdentityResolver, NeighbourLookup
from metadata_server.iso.service import IsoFallback
from metadata_server.launch.launcher import Launcher, LaunchSettings
from metadata_server.launch.xl import Xl
from metadata_server.metrics import Metrics
from metadata_server.model import METADATA_ADDRESS, AddressRules
from metadata_server.netlink import (
    BridgeAddressError,
    NetlinkNeighbours,
    ensure_address,
    remove_address,
)
from metadata_server.ratelimit import TokenBuckets
from metadata_server.registry import Registry
from metadata_server.signing import ensure_key
from metadata_server.snapshot import GuestSnapshot
from metadata_server.state_directory import make_state_directory
from metadata_server.store import Change, Store, open_store
from metadata_server.store.health import health_of
from metadata_server.xen.host import XenHost

log = logging.getLogger(__name__)
LAUNCH_DIRECTORY = "launched"  # below the state directory: one directory per launched guest


@dataclass(frozen=True)
class BoundAddress:
    host: str | None
    port: int | None
    unix_path: str | None = None

    @property
    def url(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def _start_site(runner: web.AppRunner, listen: ListenAddress) -> web.BaseSite:
    site: web.BaseSite
    if listen.unix_path is not None:
        if os.path.exists(listen.unix_path):  # noqa: ASYNC240 (once, at start)
            os.unlink(listen.unix_path)  # a socket left by a killed server
        site = web.UnixSite(runner, listen.unix_path)
    else:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    await site.start()
    if listen.unix_path is not None:
        os.chmod(listen.unix_path, 0o600)
    return site


def _bound(site: web.BaseSite, listen: ListenAddress) -> BoundAddress:
    if listen.unix_path is not None:
        return BoundAddress(None, None, listen.unix_path)
    server = site._server  # aiohttp keeps the asyncio server here
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    host, port = sockets[0].getsockname()[:2]
    return BoundAddress(host, port)


def _dom0_addresses(settings: Settings) -> set[str]:
    """Addresses only Dom0 may claim on the bridge: the metadata address, the subnets'
    gateways and the DNS responder's (the bridge's own are added by the guard)."""
    addresses = {str(METADATA_ADDRESS)}
    addresses.update(str(subnet.gateway) for subnet in settings.dhcp.subnets)
    if settings.dns is not None:
        addresses.update(host for host, _ in settings.dns.listen)
    return addresses


def _on_xen(settings: Settings) -> bool:
    """Whether vifs can be read from xenstore: a Xen Dom0, or a configured xenstored."""
    if settings.iso.xen.xenstored_path is not None:
        return True
    try:
        return "control_d" in Path("/proc/xen/capabilities").read_text()
    except OSError:
        return False


class MetadataService:
    """Everything `metadata-server serve` runs, as one object with start() and stop()."""

    def __init__(
        self,
        settings: Settings,
        *,
        neighbours: NeighbourLookup | None = None,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.settings = settings
        self._neighbours_override = neighbours
        self._clock = clock
        self._random_bytes = random_bytes
        self._runners: list[web.AppRunner] = []
        self._netlink: NetlinkNeighbours | None = None
        self.store: Store = open_store(settings.db)
        self.registry: Registry | None = None
        self.snapshot = GuestSnapshot(
            DocumentOptions(
                default_domain=settings.domain,
                public_url=settings.public_url,
                serve_secrets_once=settings.guest.serve_secrets_once,
            ),
            host=settings.host_name,
        )
        self.admin_token = ""
        self._token_file: Path | None = None
        self._added_bridge_address = False
        self.dhcp: DhcpService | None = None
        self.dns: DnsService | None = None
        self.iso: IsoFallback | None = None
        self.guard: BridgeGuard | None = None
        self.guest_addresses: list[BoundAddress] = []
        self.admin_address: BoundAddress | None = None

    def _launcher(self, registry: Registry, xen: XenHost) -> Launcher:
        settings = self.settings

        async def no_vifs() -> set[str]:
            return set()

        return Launcher(
            registry,
            LaunchSettings(
                directory=settings.state_dir / LAUNCH_DIRECTORY,
                subnets=settings.dhcp.subnets,
                dom0_addresses=frozenset(_dom0_addresses(settings)),
                bridge=settings.bridge,
                host=settings.host_name,
            ),
            Xl(
                command=xen.settings.xl_command,
                env=xen.xenstore.env,
                timeout=xen.settings.command_timeout,
            ),
            random_bytes=self._random_bytes,
            running_macs=xen.vif_macs if _on_xen(settings) else no_vifs,
            clock=self._clock,
        )

    async def start(self) -> None:
        make_state_directory(self.settings.state_dir)
        self.admin_token, self._token_file = ensure_server_token(self.settings)
        await self.store.open()
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()
            raise

    async def _start_parts(self) -> None:
        settings = self.settings
        self.registry = Registry(
            self.store,
            clock=self._clock,
            random_bytes=self._random_bytes,
            password_rounds=settings.password_rounds,
            default_domain=settings.domain,
            address_rules=AddressRules(
                allow_loopback=settings.guest.allow_loopback,
                networks=dhcp_networks(settings),
                host=settings.host_name,
            ),
        )
        # Hold changes that arrive while the list is read (another server's, through
        # PostgreSQL), then apply them after it: whole records, so the last one wins.
        early: list[Change] = []
        unsubscribe = self.store.subscribe(early.extend)
        try:
            vms = await self.store.list(host=settings.host_name)
        finally:
            unsubscribe()
        self.snapshot.load(vms)
        self.store.subscribe(self.snapshot.apply)
        self.snapshot.apply(early)

        neighbours = self._neighbours_override
        if neighbours is None and settings.guest.verify_neighbour != "never":
            self._netlink = NetlinkNeighbours()
            await self._netlink.start()
            neighbours = self._netlink
        identity = IdentityResolver(
            self.snapshot,
            IdentityPolicy(
                trusted_proxies=settings.guest.trust_proxy,
                verify=settings.guest.verify_neighbour,
            ),
            neighbours,
        )

        self.metrics = Metrics(clock=self._clock)
        self.registry.subscribe(self.metrics.observe_changes)
        guest_app = make_guest_app(self.metrics)
        add_cloud_routes(guest_app)
        admin_app = make_admin_app(
            self.admin_token, public_metrics=settings.admin.listen.is_local()
        )
        admin_app[METRICS] = self.metrics
        for app in (guest_app, admin_app):
            app[REGISTRY] = self.registry
            app[SNAPSHOT] = self.snapshot
            app[IDENTITY] = identity
            app[SETTINGS] = settings
            app[CLOCK] = self._clock
        if settings.dhcp.daemon != "none":
            self.dhcp = DhcpService(
                settings,
                self.store,
                leases=(self.snapshot.address_of, self.registry.mark_leased),
            )
            admin_app[DHCP] = self.dhcp
        guest_app[TOKEN_SECRET] = self._random_bytes(32)
        guest_app[SIGNER] = ensure_key(settings.guest.signing_key)
        guest_app[CLOUD_OPTIONS] = CloudOptions(
            instance_type=settings.ec2.instance_type,
            availability_zone=settings.ec2.availability_zone,
        )
        limiter = (
            TokenBuckets(
                rate=settings.guest.rate_limit,
                burst=settings.guest.rate_burst,
                clock=time.monotonic,
            )
            if settings.guest.rate_limit > 0
            else None
        )
        tokens = SessionTokens(
            guest_app[TOKEN_SECRET], self._clock, required=settings.ec2.tokens == "required"
        )
        guest_app[ACCESS] = GuestAccess(identity, limiter, tokens)
        self.iso = IsoFallback(
            settings.iso,
            self.registry,
            self.snapshot.options,
            guest_app[CLOUD_OPTIONS],
            clock=self._clock,
        )
        await self.iso.start()  # removes a crashed run's ISOs and keys; starts iso.auto
        admin_app[PROVISIONER] = self.iso.provisioner
        admin_app[LAUNCHER] = self._launcher(self.registry, self.iso.xen)

        if settings.bridge is not None:
            try:
                self._added_bridge_address = await ensure_address(
                    settings.bridge, str(METADATA_ADDRESS), 32
                )
            except BridgeAddressError as exc:
                raise ConfigError(f"bridge: {exc}") from None
            if settings.guard.enabled:
                self.guard = BridgeGuard(
                    settings.guard,
                    settings.bridge,
                    self.snapshot,
                    self.store,
                    dom0_addresses=_dom0_addresses(settings),
                    xen=self.iso.xen if _on_xen(settings) else None,
                    clock=self._clock,
                )
                await self.guard.start()
                admin_app[GUARD] = self.guard
            else:
                log.warning("guard.enabled is false: %s", OFF_WARNING)
                admin_app[GUARD_OFF] = "guard.enabled is false"

        guest = settings.guest
        guest_runner = web.AppRunner(
            guest_app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=guest.idle_timeout
        )
        await guest_runner.setup()
        self._runners.append(guest_runner)
        counter = ConnectionCounter(
            ConnectionLimits(
                per_source=guest.max_connections,
                request_timeout=guest.request_timeout,
                idle_timeout=guest.idle_timeout,
                max_header_bytes=guest.max_header_bytes,
            ),
            exempt=identity.is_trusted_proxy,
        )
        for listen in guest.listen:
            assert listen.host is not None
            assert listen.port is not None
            guarded = GuardedTCPSite(guest_runner, listen.host, listen.port, counter)
            await guarded.start()
            assert guarded.bound is not None
            self.guest_addresses.append(BoundAddress(*guarded.bound))

        self._read_metrics(counter)

        if settings.dns is not None:
            self.dns = DnsService(settings.dns, self.store, settings.domain)
            await self.dns.start()

        admin_runner = web.AppRunner(admin_app, shutdown_timeout=2.0)
        await admin_runner.setup()
        self._runners.append(admin_runner)
        site = await _start_site(admin_runner, settings.admin.listen)
        self.admin_address = _bound(site, settings.admin.listen)
        if self.dhcp is not None:
            await self.dhcp.start(
                admin_url=self._admin_url(),
                token=self.admin_token,
                token_file=self._token_file,
                host=settings.host_name,
            )
        log.info(
            "serving %d guests; guest API on %s; admin API on %s",
            len(self.snapshot),
            ", ".join(address.url for address in self.guest_addresses),
            self.admin_address.url,
        )

    def _read_metrics(self, counter: ConnectionCounter) -> None:
        """Where /metrics reads what the parts know at scrape time."""
        readings = self.metrics.readings
        readings.states = self.snapshot.count_by_state
        readings.connection_refusals = lambda: dict(counter.refused)
        readings.store_healthy = lambda: health_of(self.store).healthy
        readings.feed_lag = getattr(self.store, "feed_lag", None)
        if self.dhcp is not None:
            readings.dhcp = self._dhcp_counts
        if self.guard is not None:
            readings.guard = self._guard_drops
        if self.iso is not None:
            self.iso.provisioner.on_flow = self.metrics.observe_flow

    def _dhcp_counts(self) -> dict[str, int]:
        status = self.dhcp.status() if self.dhcp is not None else None
        if status is None:
            return {}
        return {
            "renders": status.renders,
            "refusals": status.refusals,
            "reloads": status.reloads,
            "left_out": len(status.left_out),
        }

    def _guard_drops(self) -> dict[str, int]:
        if self.guard is None:
            return {}
        drops: dict[str, int] = {"unregistered": self.guard.status.unregistered_drops}
        for kinds in self.guard.status.drops.values():
            for kind, packets in kinds.items():
                drops[kind] = drops.get(kind, 0) + packets
        return drops

    def _admin_url(self) -> str:
        assert self.admin_address is not None
        if self.admin_address.unix_path is not None:
            return self.admin_address.url
        host = self.admin_address.host
        if host in ("0.0.0.0", "::"):  # noqa: S104 (a comparison, not a bind)
            host = "127.0.0.1"
        return BoundAddress(host, self.admin_address.port).url

    async def stop(self) -> None:
        if self.guard is not None:
            await self.guard.stop()  # removes its table
            self.guard = None
        if self.iso is not None:
            await self.iso.stop()  # cuts running flows short; each removes its ISO and keys
            self.iso = None
        if self.dhcp is not None:
            await self.dhcp.stop()
            self.dhcp = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None
        if self._added_bridge_address and self.settings.bridge is not None:
            await remove_address(self.settings.bridge, str(METADATA_ADDRESS), 32)
            self._added_bridge_address = False
        if self._netlink is not None:
            await self._netlink.stop()
            self._netlink = None
        await self.store.close()
