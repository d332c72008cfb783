"""The OpenAPI description matches the routes the admin app really has, and states the
validators' own patterns: every value a pattern admits passes its validator."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from metadata_server import model
from metadata_server.http.admin import make_admin_app
from metadata_server.http.openapi import openapi_document
from metadata_server.http.openapi_schemas import (
    CRYPT_HASH_PATTERN,
    HOST_IPV4_PATTERN,
    SSH_KEY_PATTERN,
)
from metadata_server.passwords import hash_password
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    app = make_admin_app("x" * 32)
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((route.method.lower(), re.sub(r"\{(\w+)\}", r"{\1}", path)))
    described = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert routes == described


def test_document_is_valid_openapi() -> None:
    validate(openapi_document())


# --- the patterns the document states, held to the validators ---------------------------
# Every value a pattern admits must pass its validator: a request valid by the schema is
# never refused for its shape. Values are drawn from each pattern itself.

PATTERN_VALIDATORS = [
    pytest.param(model.MAC_PATTERN, model.parse_mac, id="mac"),
    pytest.param(model.HOSTNAME_PATTERN, model.parse_hostname, id="hostname"),
    pytest.param(model.DOMAIN_PATTERN, model.parse_domain, id="domain"),
    pytest.param(HOST_IPV4_PATTERN, lambda text: model.parse_ipv4(text, "a"), id="ipv4"),
    pytest.param(model.PASSWORD_PATTERN, model.parse_password, id="password"),
    pytest.param(CRYPT_HASH_PATTERN, model.parse_password_hash, id="password-hash"),
    pytest.param(SSH_KEY_PATTERN, lambda text: model.parse_ssh_key(text, "k"), id="ssh-key"),
    pytest.param(
        model.METADATA_KEY_PATTERN, lambda key: model.parse_metadata({key: "v"}), id="metadata-key"
    ),
    pytest.param(
        model.METADATA_VALUE_PATTERN,
        lambda value: model.parse_metadata({"k": value[: model.MAX_METADATA_VALUE]}),
        id="metadata-value",
    ),
]


@pytest.mark.parametrize(("pattern", "validator"), PATTERN_VALIDATORS)
def test_every_value_a_pattern_admits_passes_its_validator(
    pattern: str, validator: Callable[[str], object]
) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(pattern, fullmatch=True))
    def check(text: str) -> None:
        validator(text)  # raises InvalidInput when refused

    check()


REFUSED_ADDRESSES = [
    "0.1.2.3", "127.0.0.1", "169.254.169.254", "169.254.0.1", "224.0.0.1", "239.1.1.1",
    "240.0.0.1", "255.255.255.255", "10.0.0.01", "1.2.3", "1.2.3.4.5", "256.1.1.1",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_the_address_pattern_refuses_what_is_no_guest_address(address: str) -> None:
    assert re.fullmatch(HOST_IPV4_PATTERN, address) is None


def test_the_address_pattern_admits_every_other_first_octet() -> None:
    refused = {0, 127, *range(224, 256)}
    for first in range(256):
        admitted = re.fullmatch(HOST_IPV4_PATTERN, f"{first}.1.2.3") is not None
        assert admitted == (first not in refused), first
    assert re.fullmatch(HOST_IPV4_PATTERN, "169.253.1.1")
    assert re.fullmatch(HOST_IPV4_PATTERN, "169.255.1.1")


def test_real_keys_and_hashes_match_their_patterns(tmp_path: Path) -> None:
    keys = [SAMPLE_KEY]
    if shutil.which("ssh-keygen"):
        for kind, bits in (("ed25519", []), ("rsa", ["-b", "2048"]), ("ecdsa", ["-b", "384"])):
            path = tmp_path / kind
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", "a@b c", "-f", str(path)],
                check=True,
            )
            keys.append(path.with_suffix(".pub").read_text().strip())
    for key in keys:
        assert re.fullmatch(SSH_KEY_PATTERN, key), key
    hashes = [SAMPLE_HASH, "!" + SAMPLE_HASH, "*", "!", hash_password("x", salt="s" * 16)]
    for crypt in hashes:
        assert re.fullmatch(CRYPT_HASH_PATTERN, crypt), crypt


def test_a_key_of_another_type_than_it_says_does_not_match() -> None:
    kind, blob, comment = SAMPLE_KEY.split(" ", 2)
    assert re.fullmatch(SSH_KEY_PATTERN, f"ssh-rsa {blob} {comment}") is None
    assert re.fullmatch(SSH_KEY_PATTERN, f"{kind} {blob[:30]}") is None, "too short"
