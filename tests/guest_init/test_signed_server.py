"""Signed documents end to end: the real guest script with `verify_key` set to the real
server's public key (as `metadata-server key show` prints it) configures itself from the
real server; with any other key it refuses the document and applies nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from metadata_server.app import MetadataService
from metadata_server.signing import load_key
from tests.guest_init.conftest import MAC, Guest, guest_url, loopback_guest
from tests.support.requirements import need_tools


def key_line(pem: str) -> str:
    """What verify_key takes: the base64 line of the public key's PEM."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


@pytest.mark.parametrize("key", ["the server's", "another"])
async def test_the_script_checks_the_real_servers_signature(
    service: MetadataService, make_guest: Callable[..., Guest], key: str
) -> None:
    need_tools("openssl")
    assert service.registry is not None
    await service.registry.put(MAC, loopback_guest(hostname="signed1"))
    if key == "another":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    else:
        pem = load_key(service.settings.guest.signing_key).public_pem()
    guest = make_guest("busybox", ("openssl",))
    guest.configure(metadata_url=guest_url(service), verify_key=key_line(pem), retry_total=0)
    before = guest.files()
    boot = await guest.boot()
    if key == "the server's":
        assert boot.returncode == 0, guest.log()
        assert boot.hostname == "signed1"
    else:
        assert boot.returncode != 0 and boot.hostname == "template"
        assert guest.files() == before
        assert "signature" in guest.log()
