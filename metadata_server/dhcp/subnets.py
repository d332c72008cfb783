"""The guests' subnets (the `[[dhcp.subnets]]` tables): what DHCP hands out on each, read
from the settings' tables and checked. Pure: the DHCP templates and the settings both
use it, so neither needs the other."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.model import parse_domain


@dataclass(frozen=True)
class Subnet:
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600


SUBNET_KEYS = frozenset({"cidr", "gateway", "bridge", "dns", "domain", "lease_time"})


def _is_interface_name(name: object) -> bool:
    """What Linux takes as a link name (1-15 bytes, no '/', ':' or whitespace), narrowed
    to printable ASCII: the name is written into the DHCP daemons' files."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 15
        and name.isascii()
        and name.isprintable()
        and name not in (".", "..")
        and not any(c in name for c in " /:")
    )


def parse_subnets(tables: list[dict[str, Any]], default_domain: str | None) -> tuple[Subnet, ...]:
    subnets: list[Subnet] = []
    for index, table in enumerate(tables):
        where = f"dhcp.subnets[{index}]"
        unknown = set(table) - SUBNET_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        try:
            cidr = ipaddress.IPv4Network(str(table.get("cidr")), strict=True)
        except ValueError as exc:
            raise ConfigError(f"{where}.cidr: {exc}") from None
        try:
            gateway = ipaddress.IPv4Address(str(table.get("gateway")))
        except ValueError:
            raise ConfigError(f"{where}.gateway must be an IPv4 address") from None
        if gateway not in cidr or gateway in (cidr.network_address, cidr.broadcast_address):
            raise ConfigError(f"{where}.gateway {gateway} is not a host address of {cidr}")
        dns = table.get("dns", [])
        if not isinstance(dns, list):
            raise ConfigError(f"{where}.dns must be a list of addresses")
        try:
            dns_servers = tuple(str(ipaddress.IPv4Address(str(item))) for item in dns)
        except ValueError:
            raise ConfigError(f"{where}.dns must be a list of IPv4 addresses") from None
        domain = table.get("domain", default_domain)
        if domain is not None:
            try:
                domain = parse_domain(domain, f"{where}.domain")
            except InvalidInput as exc:
                raise ConfigError(exc.detail) from None
        lease_time = table.get("lease_time", 3600)
        if type(lease_time) is not int or not 60 <= lease_time <= 86400 * 365:
            raise ConfigError(f"{where}.lease_time must be seconds, from 60 to a year")
        bridge = table.get("bridge")
        if bridge is not None and not _is_interface_name(bridge):
            raise ConfigError(f"{where}.bridge must be an interface name")
        for other in subnets:
            if other.cidr.overlaps(cidr):
                raise ConfigError(f"{where}.cidr {cidr} overlaps {other.cidr}")
        subnets.append(Subnet(cidr, gateway, bridge, dns_servers, domain, lease_time))
    return tuple(subnets)
