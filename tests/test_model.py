"""Validation of guest records: every field's good and bad values, as tables."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadata_server.errors import InvalidInput
from metadata_server.model import (
    DOMAIN_PATTERN,
    HOSTNAME_PATTERN,
    MAC_PATTERN,
    MAX_METADATA_VALUE,
    METADATA_KEY_PATTERN,
    METADATA_VALUE_PATTERN,
    PASSWORD_PATTERN,
    AddressRules,
    GuestNetwork,
    merge_patch,
    parse_domain,
    parse_hostname,
    parse_mac,
    parse_message,
    parse_metadata,
    parse_password,
    parse_vm,
    spec_to_json,
)
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, guest_body, mac_of


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("02:00:aa:bb:cc:dd", "02:00:aa:bb:cc:dd"),
        ("02-00-AA-BB-CC-DD", "02:00:aa:bb:cc:dd"),
        ("02:00:Aa:bB:cc:DD", "02:00:aa:bb:cc:dd"),
        (" 02:00:aa:bb:cc:dd ", "02:00:aa:bb:cc:dd"),
    ],
    ids=["colons", "dashes-upper", "mixed-case", "spaces"],
)
def test_mac_is_normalised(given: str, stored: str) -> None:
    assert parse_mac(given) == stored


@pytest.mark.parametrize(
    "given",
    [
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "02:00:aa:bb:cc",
        "02:00:aa:bb:cc:dd:ee",
        "02:00-aa:bb:cc:dd",
        "0200aabbccdd",
        "zz:00:aa:bb:cc:dd",
        "",
        5,
        None,
    ],
    ids=[
        "multicast",
        "broadcast",
        "all-zero",
        "short",
        "long",
        "mixed-separators",
        "no-separators",
        "not-hex",
        "empty",
        "number",
        "null",
    ],
)
def test_bad_mac_is_refused(given: Any) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_mac(given)
    assert error.value.field == "mac"


BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("hostname-underscore", {"hostname": "web_1"}, "hostname"),
    ("hostname-leading-dash", {"hostname": "-web"}, "hostname"),
    ("hostname-trailing-dash", {"hostname": "web-"}, "hostname"),
    ("hostname-too-long", {"hostname": "a" * 64}, "hostname"),
    ("hostname-dotted", {"hostname": "web.example"}, "hostname"),
    ("hostname-empty", {"hostname": ""}, "hostname"),
    ("hostname-number", {"hostname": 7}, "hostname"),
    ("domain-bad-label", {"domain": "exa_mple.org"}, "domain"),
    ("ip-not-address", {"ipv4": {"address": "198.18.0.300", "prefix": 24}}, "ipv4.address"),
    ("ip-missing", {"ipv4": {"prefix": 24}}, "ipv4.address"),
    ("ip-multicast", {"ipv4": {"address": "224.0.0.5", "prefix": 24}}, "ipv4.address"),
    ("ip-network-address", {"ipv4": {"address": "198.18.0.0", "prefix": 24}}, "ipv4.address"),
    ("ip-broadcast", {"ipv4": {"address": "198.18.0.255", "prefix": 24}}, "ipv4.address"),
    ("ip-metadata", {"ipv4": {"address": "169.254.169.254", "prefix": 16}}, "ipv4.address"),
    ("prefix-zero", {"ipv4": {"address": "198.18.0.5", "prefix": 0}}, "ipv4.prefix"),
    ("prefix-33", {"ipv4": {"address": "198.18.0.5", "prefix": 33}}, "ipv4.prefix"),
    ("prefix-string", {"ipv4": {"address": "198.18.0.5", "prefix": "24"}}, "ipv4.prefix"),
    ("prefix-bool", {"ipv4": {"address": "198.18.0.5", "prefix": True}}, "ipv4.prefix"),
    (
        "gateway-outside",
        {"ipv4": {"address": "198.18.0.5", "prefix": 24, "gateway": "198.19.0.1"}},
        "ipv4.gateway",
    ),
    (
        "gateway-is-self",
        {"ipv4": {"address": "198.18.0.5", "prefix": 24, "gateway": "198.18.0.5"}},
        "ipv4.gateway",
    ),
    (
        "ipv4-unknown-key",
        {"ipv4": {"address": "198.18.0.5", "prefix": 24, "mtu": 9000}},
        "ipv4.mtu",
    ),
    ("ipv4-not-object", {"ipv4": "198.18.0.5/24"}, "ipv4"),
    ("dns-not-list", {"dns": "198.18.0.1"}, "dns"),
    ("dns-bad-entry", {"dns": ["198.18.0.1", "resolver"]}, "dns[1]"),
    ("hash-not-crypt", {"password_hash": "hunter2"}, "password_hash"),
    ("hash-short", {"password_hash": "$6$salt$short"}, "password_hash"),
    ("hash-with-colon", {"password_hash": SAMPLE_HASH + ":"}, "password_hash"),
    ("password-and-hash", {"password": "x", "password_hash": SAMPLE_HASH}, "password"),
    ("password-control", {"password": "a\nb", "password_hash": None}, "password"),
    ("password-empty", {"password": "", "password_hash": None}, "password"),
    ("key-unknown-type", {"ssh_keys": ["ssh-foo AAAA comment"]}, "ssh_keys[0]"),
    ("key-not-base64", {"ssh_keys": ["ssh-ed25519 !!!!"]}, "ssh_keys[0]"),
    (
        "key-type-mismatch",
        {"ssh_keys": [SAMPLE_KEY.replace("ssh-ed25519", "ssh-rsa")]},
        "ssh_keys[0]",
    ),
    ("key-one-word", {"ssh_keys": ["ssh-ed25519"]}, "ssh_keys[0]"),
    ("key-newline", {"ssh_keys": [SAMPLE_KEY + "\nssh-rsa AAAA"]}, "ssh_keys[0]"),
    ("keys-not-list", {"ssh_keys": SAMPLE_KEY}, "ssh_keys"),
    ("user-data-too-big", {"user_data": "x" * (64 * 1024 + 1)}, "user_data"),
    ("user-data-not-string", {"user_data": {"a": 1}}, "user_data"),
    ("metadata-not-object", {"metadata": ["a"]}, "metadata"),
    ("metadata-bad-key", {"metadata": {"a b": "c"}}, "metadata"),
    ("metadata-number-value", {"metadata": {"a": 1}}, "metadata.a"),
    ("metadata-newline-value", {"metadata": {"a": "b\nc"}}, "metadata.a"),
    ("unknown-field", {"colour": "blue"}, "colour"),
    ("host-bad", {"host": "dom0 one"}, "host"),
]


@pytest.mark.parametrize(
    ("change", "field"), [(c, f) for _, c, f in BAD_FIELDS], ids=[i for i, _, _ in BAD_FIELDS]
)
def test_bad_field_is_refused_and_named(change: dict[str, Any], field: str) -> None:
    body = guest_body()
    body.update(change)
    with pytest.raises(InvalidInput) as error:
        parse_vm(body, mac="02:00:00:00:00:01")
    assert error.value.field == field


def test_a_good_record_parses_to_normal_form() -> None:
    body = guest_body(
        hostname="Web1",
        domain="Guests.Internal.",
        metadata={"role": "db", "tier": "1"},
        ssh_keys=[SAMPLE_KEY, SAMPLE_KEY + "-again"],
    )
    parsed = parse_vm(body, mac="02-00-00-00-00-01")
    spec = parsed.spec
    assert spec.mac == "02:00:00:00:00:01"
    assert spec.hostname == "web1"
    assert spec.domain == "guests.internal"
    assert spec.fqdn(None) == "web1.guests.internal"
    assert spec.ssh_keys == (SAMPLE_KEY,), "the same key twice is kept once"
    assert parsed.password is None


def test_mac_in_body_must_match_url() -> None:
    with pytest.raises(InvalidInput) as error:
        parse_vm(guest_body(mac="02:00:00:00:00:02"), mac="02:00:00:00:00:01")
    assert error.value.field == "mac"


@pytest.mark.parametrize(
    "hash_value",
    [
        SAMPLE_HASH,
        "!",
        "*",
        "!" + SAMPLE_HASH,
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
        "$5$rounds=10000$saltsaltsaltsalt$" + "a" * 43,
        "$2b$12$" + "a" * 53,
    ],
    ids=["sha512", "locked", "star", "locked-hash", "yescrypt", "sha256-rounds", "bcrypt"],
)
def test_crypt_forms_guests_accept(hash_value: str) -> None:
    assert parse_vm(
        guest_body(password_hash=hash_value), mac="02:00:00:00:00:01"
    ).spec.password_hash


def test_password_never_appears_in_an_error() -> None:
    secret = "a\tsecret-value-zz"
    with pytest.raises(InvalidInput) as error:
        parse_vm(guest_body(password=secret, password_hash=None), mac="02:00:00:00:00:01")
    assert "secret-value" not in str(error.value.to_json())


def test_merge_patch_replaces_and_removes() -> None:
    spec = parse_vm(guest_body(metadata={"a": "1", "b": "2"}), mac="02:00:00:00:00:01").spec
    merged = merge_patch(
        spec_to_json(spec, secrets=True),
        {"metadata": {"a": None, "c": "3"}, "ipv4": {"gateway": None}, "password": "new"},
    )
    assert merged["metadata"] == {"b": "2", "c": "3"}
    assert "gateway" not in merged["ipv4"]
    assert "password_hash" not in merged, "a new plain password replaces the stored hash"


# --- control characters and line breaks, in every field and key -------------------------

# What each single-line field holds when good, and where an error about it points.
GOOD_VALUES: dict[str, tuple[str, Any, str]] = {
    "mac": ("02:00:00:00:00:01", lambda v: {"mac": v}, "mac"),
    "hostname": ("web", lambda v: {"hostname": v}, "hostname"),
    "domain": ("example.test", lambda v: {"domain": v}, "domain"),
    "host": ("dom0-a", lambda v: {"host": v}, "host"),
    "ipv4.address": ("198.18.0.11", lambda v: {"ipv4": {"address": v, "prefix": 24}}, "ipv4.address"),
    "ipv4.gateway": ("198.18.0.1", lambda v: {"ipv4": {"address": "198.18.0.11", "prefix": 24, "gateway": v}}, "ipv4.gateway"),
    "dns": ("198.18.0.1", lambda v: {"dns": [v]}, "dns[0]"),
    "ssh-key-comment": ("admin", lambda v: {"ssh_keys": [SAMPLE_KEY.rsplit(" ", 1)[0] + " " + v]}, "ssh_keys[0]"),
    "metadata-key": ("note", lambda v: {"metadata": {v: "x"}}, "metadata"),
    "metadata-value": ("hello", lambda v: {"metadata": {"note": v}}, "metadata.note"),
    "password": ("secret", lambda v: {"password": v, "password_hash": None}, "password"),
    "password-hash": (SAMPLE_HASH, lambda v: {"password_hash": v}, "password_hash"),
}  # fmt: skip
# C0 (newline, CR, tab, NUL, ESC, VT, FF, the separators 0x1c-0x1f), DEL, C1 (NEL, CSI),
# the Unicode line and paragraph separators, a lone surrogate.
FORBIDDEN = ["\n", "\r", "\t", "\x00", "\x1b", "\x0b", "\x0c", "\x1e", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ud800"]  # fmt: skip


def _body(field: str, value: str) -> dict[str, Any]:
    body = guest_body()
    body.update(GOOD_VALUES[field][1](value))
    return body


@pytest.mark.parametrize("field", list(GOOD_VALUES))
def test_the_good_value_of_each_field_is_taken(field: str) -> None:
    parse_vm(_body(field, GOOD_VALUES[field][0]), mac="02:00:00:00:00:01")


@pytest.mark.parametrize("where", ["end", "start", "middle"])
@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
@pytest.mark.parametrize("field", list(GOOD_VALUES))
def test_no_field_takes_a_control_character_or_line_break(
    field: str, char: str, where: str
) -> None:
    """`$` matches before a trailing newline: `web\\n` passed `^...$` with re.match."""
    good, _, error_field = GOOD_VALUES[field]
    value = {"end": good + char, "start": char + good, "middle": good[:2] + char + good[2:]}[where]
    with pytest.raises(InvalidInput) as error:
        parse_vm(_body(field, value), mac="02:00:00:00:00:01" if field != "mac" else None)
    assert error.value.field == error_field


def test_the_metadata_key_newline_attack_is_refused() -> None:
    """The review's case: a key ending in a newline made `ssh_key ...` a line of its own."""
    attack = {"note\n": f"ssh_key {SAMPLE_KEY.rsplit(' ', 1)[0]} x"}
    with pytest.raises(InvalidInput) as error:
        parse_vm(guest_body(metadata=attack), mac="02:00:00:00:00:01")
    assert error.value.field == "metadata"


@pytest.mark.parametrize(
    ("text", "taken"),
    [("#!/bin/sh\necho hi\r\n\techo tab\n", True), ("#!/bin/sh\n\u2028ok\n", True), ("x\ud800", False)],
    ids=["newlines-tabs", "line-separator", "lone-surrogate"],
)  # fmt: skip
def test_user_data_is_multi_line_text_without_lone_surrogates(text: str, taken: bool) -> None:
    """User-data is a script or a document: line breaks belong in it. A lone surrogate is
    not text (no UTF-8 encoding), and would fail every later render of the guest."""
    if taken:
        assert parse_vm(guest_body(user_data=text), mac=mac_of(1)).spec.user_data == text
    else:
        with pytest.raises(InvalidInput) as error:
            parse_vm(guest_body(user_data=text), mac=mac_of(1))
        assert error.value.field == "user_data"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("ok\nrm -rf", "ok rm -rf"), ("a\u2028b\x85c\x9bd", "a b c d"), ("\x1b[2Jx", "[2Jx")],
    ids=["newline", "separators-and-c1", "escape"],
)
def test_a_guest_message_becomes_one_plain_line(given: str, kept: str) -> None:
    assert parse_message(given) == kept


def test_unicode_case_folding_does_not_sneak_a_name_in() -> None:
    """'\u212a' (KELVIN SIGN) lower-cases to 'k': the check is on what was sent."""
    for field, value in (
        ("hostname", "\u212aey"),
        ("domain", "\u212a.test"),
        ("mac", "02:00:00:00:00:0\u212a"),
    ):
        with pytest.raises(InvalidInput):
            parse_vm(_body(field, value) if field != "mac" else guest_body(mac=value))


# --- the published patterns are the validators' own -------------------------------------

NASTY = "aZ09-._: \n\r\t\x00\x85\u2028\u212a\u0661é"


def _accepts(parser: Any, text: str) -> bool:
    try:
        parser(text)
    except InvalidInput:
        return False
    return True


def _metadata_key(text: str) -> None:
    parse_metadata({text: "x"})


def _metadata_value(text: str) -> None:
    if len(text) > MAX_METADATA_VALUE:
        raise InvalidInput("too long")
    parse_metadata({"k": text})


PATTERNS = {
    "hostname": (HOSTNAME_PATTERN, parse_hostname),
    "domain": (DOMAIN_PATTERN, parse_domain),
    "mac": (MAC_PATTERN, parse_mac),
    "metadata-key": (METADATA_KEY_PATTERN, _metadata_key),
    "metadata-value": (METADATA_VALUE_PATTERN, _metadata_value),
    "password": (PASSWORD_PATTERN, parse_password),
}


@pytest.mark.parametrize("name", list(PATTERNS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_pattern_matches_exactly_what_its_validator_takes(name: str, data: st.DataObject) -> None:
    """The OpenAPI document states these patterns: a schema-valid value is never refused,
    and nothing the schema refuses is taken."""
    pattern, parser = PATTERNS[name]
    text = data.draw(
        st.one_of(
            st.from_regex(pattern, fullmatch=True),
            st.text(alphabet=NASTY, max_size=80),
            st.from_regex(pattern, fullmatch=True).map(lambda t: t + "\n"),
        )
    )
    matches = re.fullmatch(pattern, text) is not None and (
        name != "metadata-value" or len(text) <= MAX_METADATA_VALUE
    )
    assert matches == _accepts(parser, text), repr(text)


@pytest.mark.parametrize(
    ("text", "taken"),
    [("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, True),
     ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".", True),
     ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 62, False)],
    ids=["253", "253-and-dot", "254"],
)  # fmt: skip
def test_the_domain_pattern_caps_the_length(text: str, taken: bool) -> None:
    assert (re.fullmatch(DOMAIN_PATTERN, text) is not None) is taken
    assert _accepts(parse_domain, text) is taken


# --- guest addresses --------------------------------------------------------------------

LOOPBACK_OK = AddressRules(allow_loopback=True)
ADDRESS_CASES = [
    ("address-loopback", {"ipv4": {"address": "127.0.0.5", "prefix": 8}}, "ipv4.address", True),
    ("gateway-loopback", {"ipv4": {"address": "127.0.0.5", "prefix": 8, "gateway": "127.0.0.1"}}, "ipv4.address", True),
    ("dns-loopback", {"dns": ["127.0.0.53"]}, "dns[0]", True),
    ("address-link-local", {"ipv4": {"address": "169.254.7.7", "prefix": 16}}, "ipv4.address", False),
    ("gateway-link-local", {"ipv4": {"address": "169.254.7.7", "prefix": 16, "gateway": "169.254.0.1"}}, "ipv4.address", False),
    ("dns-link-local", {"dns": ["169.254.169.253"]}, "dns[0]", False),
    ("address-multicast", {"ipv4": {"address": "239.1.1.1", "prefix": 8}}, "ipv4.address", False),
    ("dns-multicast", {"dns": ["224.0.0.251"]}, "dns[0]", False),
    ("address-unspecified", {"ipv4": {"address": "0.0.0.0", "prefix": 8}}, "ipv4.address", False),
    ("dns-unspecified", {"dns": ["0.0.0.0"]}, "dns[0]", False),
    ("address-limited-broadcast", {"ipv4": {"address": "255.255.255.255", "prefix": 32}}, "ipv4.address", False),
    ("address-metadata", {"ipv4": {"address": "169.254.169.254", "prefix": 16}}, "ipv4.address", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "loopback"),
    [(c, f, lb) for _, c, f, lb in ADDRESS_CASES],
    ids=[i for i, *_ in ADDRESS_CASES],
)
def test_a_guest_address_that_cannot_work_is_refused(
    change: dict[str, Any], field: str, loopback: bool
) -> None:
    body = guest_body(**change)
    with pytest.raises(InvalidInput) as error:
        parse_vm(body, mac=mac_of(1))
    assert error.value.field == field
    if loopback:  # taken where the settings allow loopback guests (the demo, tests)
        assert "guest.allow_loopback" in error.value.detail
        parse_vm(body, mac=mac_of(1), rules=LOOPBACK_OK)
    else:
        with pytest.raises(InvalidInput):
            parse_vm(body, mac=mac_of(1), rules=LOOPBACK_OK)


def test_the_metadata_address_may_be_a_dns_server() -> None:
    """This server's own DNS responder may listen on 169.254.169.254, which every guest
    routes to; no other link-local address is a DNS server a guest can reach."""
    spec = parse_vm(guest_body(dns=["169.254.169.254", "198.18.0.1"]), mac=mac_of(1)).spec
    assert spec.dns == ("169.254.169.254", "198.18.0.1")


SUBNETS = AddressRules(
    networks=(
        GuestNetwork(ipaddress.IPv4Network("198.18.0.0/24"), ipaddress.IPv4Address("198.18.0.1")),
        GuestNetwork(ipaddress.IPv4Network("198.19.0.0/30"), None),
    )
)


@pytest.mark.parametrize(
    ("address", "prefix", "problem"),
    [
        ("198.20.0.5", 24, "outside every configured DHCP subnet (198.18.0.0/24, 198.19.0.0/30)"),
        ("198.18.0.1", 24, "is the gateway of the DHCP subnet 198.18.0.0/24"),
        ("198.19.0.3", 16, "network or broadcast address of the DHCP subnet 198.19.0.0/30"),
        ("198.19.0.0", 8, "network or broadcast address of the DHCP subnet 198.19.0.0/30"),
    ],
    ids=["outside", "gateway", "broadcast", "network"],
)
def test_with_dhcp_subnets_a_guest_outside_them_is_refused(
    address: str, prefix: int, problem: str
) -> None:
    body = guest_body(ipv4={"address": address, "prefix": prefix})
    with pytest.raises(InvalidInput) as error:
        parse_vm(body, mac=mac_of(1), rules=SUBNETS)
    assert error.value.field == "ipv4.address"
    assert problem in error.value.detail
    parse_vm(body, mac=mac_of(1))  # no subnets configured: nothing to be outside of


def test_the_subnet_check_is_for_this_dom0s_guests_only() -> None:
    """In a cluster each Dom0 renders DHCP for its own guests (`host`), on its own subnets."""
    rules = replace(SUBNETS, host="dom0-a")
    elsewhere = guest_body(ipv4={"address": "10.1.0.5", "prefix": 16}, host="dom0-b")
    assert parse_vm(elsewhere, mac=mac_of(1), rules=rules).spec.host == "dom0-b"
    with pytest.raises(InvalidInput) as error:
        parse_vm({**elsewhere, "host": "dom0-a"}, mac=mac_of(1), rules=rules)
    assert error.value.field == "ipv4.address"
    inside = guest_body(ipv4={"address": "198.18.0.9", "prefix": 24}, host="dom0-a")
    assert parse_vm(inside, mac=mac_of(1), rules=rules).spec.ipv4.address == "198.18.0.9"
