"""Signed documents: `GET /v1/config.txt.sig` is an Ed25519 signature of the exact bytes
of `/v1/config.txt`, by a key the server makes on first start (0600), whose public half
`metadata-server key show` prints; real openssl verifies it as the guest script does."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.errors import ConfigError
from metadata_server.signing import ensure_key, load_key
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.service import make_settings

LOCAL = {"address": "127.0.0.1", "prefix": 8, "gateway": "127.0.0.254"}


async def fetch(service: MetadataService, path: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(service.guest_addresses[0].url + path) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.read()


def openssl_verifies(tmp: Path, public_pem: str, document: bytes, signature: bytes) -> bool:
    (tmp / "key.pem").write_text(public_pem)
    (tmp / "doc").write_bytes(document)
    (tmp / "sig").write_bytes(signature)
    result = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(tmp / "key.pem"),
            "-rawin",
            "-in",
            str(tmp / "doc"),
            "-sigfile",
            str(tmp / "sig"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


async def test_the_signature_verifies_with_openssl_and_follows_the_document(tmp_path: Path) -> None:
    need_tools("openssl")
    service = MetadataService(make_settings(tmp_path))
    await service.start()
    try:
        assert service.registry is not None
        await service.registry.put(mac_of(1), guest_body(1, ipv4=LOCAL))
        document = await fetch(service, "/v1/config.txt")
        signature = await fetch(service, "/v1/config.txt.sig")
        public = load_key(tmp_path / "signing-key.pem").public_pem()
        assert len(signature) == 64
        assert openssl_verifies(tmp_path, public, document, signature)
        assert not openssl_verifies(
            tmp_path, public, document.replace(b"guest1", b"pwned1"), signature
        )
        await service.registry.patch(mac_of(1), {"hostname": "web9"})
        changed = await fetch(service, "/v1/config.txt")
        new_signature = await fetch(service, "/v1/config.txt.sig")
        assert new_signature != signature and openssl_verifies(
            tmp_path, public, changed, new_signature
        )
    finally:
        await service.stop()


def test_the_key_is_private_kept_across_starts_and_key_show_prints_only_its_public_half(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state" / "registry.db"
    out = subprocess.run(
        [sys.executable, "-m", "metadata_server", "key", "show", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")},
    ).stdout
    path = db.parent / "signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in out
    assert ensure_key(path).public_pem() == out, "the same key on the next start"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "not an unencrypted PEM private key"),
        (None, "not Ed25519"),
    ],
    ids=["garbage", "an RSA key"],
)
def test_a_bad_key_file_is_a_clear_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "signing-key.pem"
    if content is None:
        need_tools("openssl")
        subprocess.run(
            ["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True
        )
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        ensure_key(path)
