"""The [dns] settings: endpoints and checks."""

from __future__ import annotations

from typing import Any

import pytest

from metadata_server.dns.settings import DnsSettings, parse_endpoint
from metadata_server.errors import ConfigError

ENDPOINTS = {
    "ipv4": ("198.18.0.1", ("198.18.0.1", 53)),
    "ipv4-port": ("198.18.0.1:5353", ("198.18.0.1", 5353)),
    "ipv4-port-zero": ("127.0.0.1:0", ("127.0.0.1", 0)),
    "ipv6": ("2001:db8::1", ("2001:db8::1", 53)),
    "ipv6-brackets": ("[2001:db8::1]", ("2001:db8::1", 53)),
    "ipv6-brackets-port": ("[2001:db8::1]:5300", ("2001:db8::1", 5300)),
    "spaces": ("  198.18.0.1:53 ", ("198.18.0.1", 53)),
}


@pytest.mark.parametrize(("text", "expected"), ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text, "dns.upstreams") == expected


BAD_ENDPOINTS = {
    "hostname": "dns.example.com",
    "hostname-port": "resolver:53",
    "port-too-big": "198.18.0.1:70000",
    "port-not-number": "198.18.0.1:dns",
    "empty-port": "[2001:db8::1]:",
    "unclosed-bracket": "[2001:db8::1",
    "empty": "",
}


@pytest.mark.parametrize("text", BAD_ENDPOINTS.values(), ids=BAD_ENDPOINTS.keys())
def test_parse_endpoint_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match=r"dns.upstreams"):
        parse_endpoint(text, "dns.upstreams")


GOOD: dict[str, Any] = {"listen": (("127.0.0.1", 53),), "zone": "guests.internal"}
BAD_SETTINGS = {
    "no-listen": ({"listen": ()}, "dns.listen"),
    "listen-name": ({"listen": (("localhost", 53),)}, "dns.listen"),
    "upstream-port-zero": ({"upstreams": (("198.18.0.1", 0),)}, "dns.upstreams"),
    "upstream-name": ({"upstreams": (("dns.example", 53),)}, "dns.upstreams"),
    "upstream-is-self": ({"upstreams": (("127.0.0.1", 53),)}, "itself"),
    "zone-bad": ({"zone": "bad_zone!"}, "dns.zone"),
    "metadata-name-bad": ({"metadata_name": "-x"}, "dns.metadata_name"),
    "metadata-address-v6": ({"metadata_address": "fe80::1"}, "dns.metadata_address"),
    "ttl-negative": ({"ttl": -1}, "dns.ttl"),
    "ttl-huge": ({"ttl": 10**9}, "dns.ttl"),
    "timeout-zero": ({"upstream_timeout": 0}, "dns.upstream_timeout"),
    "idle-zero": ({"tcp_idle_timeout": 0}, "dns.tcp_idle_timeout"),
    "connections-zero": ({"max_tcp_connections": 0}, "dns.max_tcp_connections"),
}


@pytest.mark.parametrize(("change", "message"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_settings_refuse(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DnsSettings(**{**GOOD, **change})


def test_settings_normalise() -> None:
    settings = DnsSettings(**GOOD, metadata_name="Metadata", ttl=0)
    assert settings.metadata_fqdn == "metadata.guests.internal"
    assert DnsSettings(listen=GOOD["listen"], zone="Guests.Internal.").zone == "guests.internal"
