"""Validation of guest records: every field's good and bad values, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from metadata_server.errors import InvalidInput
from metadata_server.model import merge_patch, parse_mac, parse_vm, spec_to_json
from tests.conftest import SAMPLE_HASH, SAMPLE_KEY, guest_body


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
