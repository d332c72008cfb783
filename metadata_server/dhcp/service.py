"""DHCP as one part the composition root starts and stops: the daemon adapter chosen by
`dhcp.daemon`, dnsmasq run by the server when `dhcp.manage`, the lease hook's wrapper
script, and the sync that follows the registry."""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from metadata_server.config import Settings
from metadata_server.dhcp.daemons import Daemon, Dhcpd, Dnsmasq, Kea
from metadata_server.dhcp.lease_watch import LeaseWatch, MarkLeased, Reservation
from metadata_server.dhcp.leases import LeaseFile
from metadata_server.dhcp.managed import LEASE_FILE, ManagedDnsmasq
from metadata_server.dhcp.render import DhcpPlan
from metadata_server.dhcp.subnets import Subnet
from metadata_server.dhcp.sync import DhcpStatus, DhcpSync
from metadata_server.dhcp.templates import template_environment
from metadata_server.errors import ConfigError
from metadata_server.model import METADATA_ADDRESS, GuestNetwork
from metadata_server.store.base import Store

log = logging.getLogger(__name__)


def guest_dns_servers(settings: Settings, subnet: Subnet) -> tuple[str, ...]:
    """The DNS servers a subnet's guests are told: this server's own responder where it
    listens on port 53 on that subnet (or on the metadata address, which every guest
    routes to), else the subnet's configured `dns`."""
    if settings.dns is None:
        return subnet.dns
    ours = [
        host
        for host, port in settings.dns.listen
        if port == 53
        and ipaddress.ip_address(host).version == 4
        and (ipaddress.IPv4Address(host) in subnet.cidr or host == str(METADATA_ADDRESS))
    ]
    return tuple(ours) or subnet.dns


def dhcp_networks(settings: Settings) -> tuple[GuestNetwork, ...]:
    """The networks a guest must be on when this server writes DHCP reservations: a
    guest outside them could not be rendered, so it is refused when registered."""
    if settings.dhcp.daemon == "none":
        return ()
    return tuple(GuestNetwork(subnet.cidr, subnet.gateway) for subnet in settings.dhcp.subnets)


def dhcp_plan(settings: Settings, *, lease_hook: Path | None = None) -> DhcpPlan:
    dhcp = settings.dhcp
    return DhcpPlan(
        subnets=tuple(
            replace(subnet, dns=guest_dns_servers(settings, subnet)) for subnet in dhcp.subnets
        ),
        metadata_address=str(METADATA_ADDRESS),
        metadata_url=settings.public_url,
        kea_control_socket=str(dhcp.kea_control_socket),
        kea_lease_file=str(dhcp.kea_lease_file),
        kea_hooks_library=str(dhcp.kea_hooks_library) if dhcp.kea_hooks_library else None,
        lease_hook=str(lease_hook) if lease_hook else None,
    )


def daemon_for(settings: Settings, managed: ManagedDnsmasq | None = None) -> Daemon:
    dhcp = settings.dhcp
    if dhcp.daemon == "dnsmasq":
        return Dnsmasq(dhcp.dnsmasq_pid_file, dhcp.reload_command, managed)
    if dhcp.daemon == "kea":
        return Kea("kea-dhcp4.conf", dhcp.kea_control_socket)
    if dhcp.daemon == "dhcpd":
        return Dhcpd("dhcpd.conf", dhcp.reload_command)
    raise ValueError(f"no DHCP daemon is configured ({dhcp.daemon})")


def write_lease_hook(directory: Path, admin_url: str, token: str, token_file: Path | None) -> Path:
    """A wrapper the DHCP daemon can run with its own arguments: it calls
    `metadata-server dhcp lease-hook` with this server's admin URL and token file."""
    directory.mkdir(parents=True, exist_ok=True)
    if token_file is None:
        token_file = directory / "lease-hook.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
    script = directory / "lease-hook"
    command = [sys.executable, "-m", "metadata_server", "dhcp", "lease-hook"]
    command += ["--url", admin_url, "--admin-token-file", str(token_file.resolve())]
    text = "#!/bin/sh\n# Written by metadata-server: reports DHCP leases to its admin API.\n"
    text += f'exec {shlex.join(command)} "$@"\n'
    temporary = script.with_suffix(".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, script)
    return script


def lease_file(settings: Settings) -> LeaseFile:
    """The lease database of the configured daemon."""
    dhcp = settings.dhcp
    if dhcp.daemon == "dnsmasq":
        path = dhcp.directory / LEASE_FILE if dhcp.manage else dhcp.dnsmasq_lease_file
    elif dhcp.daemon == "kea":
        path = dhcp.kea_lease_file
    else:
        path = dhcp.dhcpd_lease_file
    return LeaseFile(dhcp.daemon, path)


class DhcpService:
    """`leases`: how the registry hears of leases when they are read from the daemon's
    lease file (`dhcp.leases = "file"`): the address reserved for a MAC here, and the
    registry's mark_leased."""

    def __init__(
        self, settings: Settings, store: Store, *, leases: tuple[Reservation, MarkLeased] | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.managed: ManagedDnsmasq | None = None
        self.sync: DhcpSync | None = None
        self.lease_watch: LeaseWatch | None = None
        if settings.dhcp.leases == "file" and leases is not None:
            self.lease_watch = LeaseWatch(lease_file(settings), *leases)

    async def start(
        self, *, admin_url: str, token: str, token_file: Path | None, host: str | None = None
    ) -> None:
        dhcp = self.settings.dhcp
        directory = dhcp.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror
            raise ConfigError(f"dhcp.directory: cannot create {directory}: {reason}") from None
        hook: Path | None = None
        if dhcp.leases == "hook" and (dhcp.manage or dhcp.kea_hooks_library is not None):
            hook = write_lease_hook(directory, admin_url, token, token_file)
        if dhcp.manage:
            bridges = [subnet.bridge for subnet in dhcp.subnets if subnet.bridge]
            self.managed = ManagedDnsmasq(
                directory,
                bridges,
                lease_script=hook,
                log_each_exchange=self.settings.log_level == "debug",
            )
        self.sync = DhcpSync(
            daemon_for(self.settings, self.managed),
            directory,
            dhcp_plan(self.settings, lease_hook=hook),
            template_environment(dhcp.templates),
            self.store,
            host=host,
            debounce=dhcp.debounce,
        )
        self.sync.follow()  # before the first render: no change can slip between the two
        await self.sync.sync_now()
        if self.managed is not None:
            await self.managed.start()
        if self.lease_watch is not None:
            try:
                await self.lease_watch.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot follow the lease file {self.lease_watch.leases.path}: {exc}; "
                    'set dhcp.leases = "hook" to have the daemon report leases instead'
                ) from None

    async def stop(self) -> None:
        if self.lease_watch is not None:
            await self.lease_watch.stop()
        if self.sync is not None:
            await self.sync.stop()
        if self.managed is not None:
            await self.managed.stop()

    def status(self) -> DhcpStatus | None:
        if self.sync is None:
            return None
        status = self.sync.status()
        process = self.managed.process if self.managed else None
        status.managed_pid = process.pid if process and process.returncode is None else None
        status.managed_restarts = self.managed.restarts if self.managed else 0
        return status
