"""The server's document signing key: an Ed25519 key pair made on first start.

A guest on a network the bridge guard does not cover (a cluster-wide DHCP, another host's
bridge) cannot tell the real server from an impostor by its address. It can check a
signature: `GET /v1/config.txt.sig` is the 64-byte Ed25519 signature of the exact bytes of
`/v1/config.txt`, and the guest script, given the public key (`verify_key=` in its
configuration), refuses a document whose signature does not verify (`openssl pkeyutl
-verify -rawin`).

The private key is a PEM file created without group or other bits (0600), next to the
database by default; its path may be logged, the key never is. `public_pem()` is what
`metadata-server key show` prints and what a master image gets. Every server of a
cluster must hold the same key file for its guests to accept any of them.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metadata_server.errors import ConfigError

log = logging.getLogger(__name__)


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey, path: Path) -> None:
        self._private = private
        self.path = path

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def public_pem(self) -> str:
        return (
            self._private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def verify_key(self) -> str:
        """The public key as the guest script's `verify_key=` takes it: the base64 line
        of `public_pem()` (the DER SubjectPublicKeyInfo)."""
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()


def load_key(path: Path) -> SigningKey:
    """The key in `path`; ConfigError when it is missing, unreadable or not Ed25519."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the signing key {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a key that is not Ed25519")
    return SigningKey(private, path)


def ensure_key(path: Path) -> SigningKey:
    """The key in `path`, made there (0600, never over an existing file) when missing."""
    if path.exists():
        return load_key(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    except FileExistsError:  # another server made it first
        return load_key(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the signing key {path}: {exc.strerror}") from None
    log.warning("generated a document signing key into %s (mode 0600)", path)
    return SigningKey(private, path)
