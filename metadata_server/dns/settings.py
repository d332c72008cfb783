"""What the DNS responder is told: addresses, the zone, upstreams and timings.

`DnsSettings` is checked when it is built (a bad value raises ConfigError naming the
`dns.*` setting), so the rest of the package can trust it. `parse_endpoint` turns the
admin's `IP[:port]` text into a `(host, port)` pair for config.py. Pure: no I/O; in
particular a host must be an IP literal, never a name to look up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from metadata_server.digits import ascii_int
from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.model import METADATA_ADDRESS, parse_domain

DNS_PORT = 53
MAX_TTL = 86400
Endpoint = tuple[str, int]


def parse_endpoint(text: str, name: str, *, default_port: int = DNS_PORT) -> Endpoint:
    """`IP`, `IP:port`, `[IPv6]:port` or a bare IPv6 address → `(host, port)`."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{name}: expected IP[:port], not {text!r}")
        port_text = rest[1:]
        if rest and not port_text:
            raise ConfigError(f"{name}: expected IP[:port], not {text!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    port = ascii_int(port_text) if port_text else default_port
    if port is None:
        raise ConfigError(f"{name}: {port_text!r} is not a port number")
    endpoint = (host, port)
    _check_endpoint(endpoint, name, allow_zero_port=True)
    return (str(ipaddress.ip_address(host)), port)


def _check_endpoint(endpoint: object, name: str, *, allow_zero_port: bool) -> Endpoint:
    if (
        not isinstance(endpoint, tuple)
        or len(endpoint) != 2
        or not isinstance(endpoint[0], str)
        or type(endpoint[1]) is not int
    ):
        raise ConfigError(f"{name}: expected (IP, port) pairs, not {endpoint!r}")
    host, port = endpoint
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{name}: {host!r} is not an IP address") from None
    lowest = 0 if allow_zero_port else 1
    if not lowest <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is outside {lowest}..65535")
    return endpoint


@dataclass(frozen=True)
class DnsSettings:
    """The `[dns]` section. `listen` port 0 binds a free port (UDP and TCP share it)."""

    listen: tuple[Endpoint, ...]
    zone: str
    metadata_name: str = "metadata"
    metadata_address: str = str(METADATA_ADDRESS)
    upstreams: tuple[Endpoint, ...] = ()
    ttl: int = 60
    upstream_timeout: float = 2.0
    tcp_idle_timeout: float = 10.0
    max_tcp_connections: int = 1024  # in all (file descriptors)
    max_tcp_per_client: int = 8  # from one address: one client cannot take them all

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("dns.listen needs at least one address")
        for endpoint in self.listen:
            _check_endpoint(endpoint, "dns.listen", allow_zero_port=True)
        for endpoint in self.upstreams:
            _check_endpoint(endpoint, "dns.upstreams", allow_zero_port=False)
        for upstream in self.upstreams:
            if _same_socket(upstream, self.listen):
                raise ConfigError(
                    f"dns.upstreams: {upstream[0]}:{upstream[1]} is this responder itself"
                )
        try:
            zone = parse_domain(self.zone, "dns.zone")
            metadata_name = parse_domain(self.metadata_name, "dns.metadata_name")
        except InvalidInput as exc:
            raise ConfigError(f"{exc.field}: {exc.detail}") from None
        try:
            address = ipaddress.IPv4Address(self.metadata_address)
        except ValueError:
            raise ConfigError(
                f"dns.metadata_address: {self.metadata_address!r} is not an IPv4 address"
            ) from None
        if type(self.ttl) is not int or not 0 <= self.ttl <= MAX_TTL:
            raise ConfigError(f"dns.ttl must be an integer from 0 to {MAX_TTL}")
        for field_name in ("upstream_timeout", "tcp_idle_timeout"):
            value = getattr(self, field_name)
            if not isinstance(value, int | float) or not 0 < value <= 60:
                raise ConfigError(f"dns.{field_name} must be more than 0 and at most 60 seconds")
        for field_name in ("max_tcp_connections", "max_tcp_per_client"):
            value = getattr(self, field_name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"dns.{field_name} must be a positive integer")
        # Normalised forms; the dataclass is frozen, so set them the one allowed way.
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "metadata_name", metadata_name)
        object.__setattr__(self, "metadata_address", str(address))

    @property
    def metadata_fqdn(self) -> str:
        return f"{self.metadata_name}.{self.zone}"


def _same_socket(upstream: Endpoint, listen: tuple[Endpoint, ...]) -> bool:
    """Forwarding to our own socket would loop until the forward cap stops it.

    Only an exact match is caught: whether another address is local is not knowable here.
    """
    address = ipaddress.ip_address(upstream[0])
    return any(
        port == upstream[1] and ipaddress.ip_address(host) == address for host, port in listen
    )
