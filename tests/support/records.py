"""Guest records for tests: a valid guest body on 198.18.0.0/24, MACs by number, and a
sample crypt hash and OpenSSH key."""

from __future__ import annotations

from typing import Any


def guest_body(n: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid guest object on 198.18.0.0/24, number `n`."""
    body: dict[str, Any] = {
        "hostname": f"guest{n}",
        "ipv4": {"address": f"198.18.0.{n + 10}", "prefix": 24, "gateway": "198.18.0.1"},
        "dns": ["198.18.0.1"],
        "password_hash": SAMPLE_HASH,
        "ssh_keys": [SAMPLE_KEY],
    }
    body.update(overrides)
    return body


def mac_of(n: int) -> str:
    return f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}"


SAMPLE_HASH = (
    "$6$saltsaltsaltsalt$"
    "ZNEGiETZH5IxhTYbBVcX6nYtZ8o6kEQLoLDhzkUpBsS9hFV59IXFADy5Hi1nYThvMJ1aoFpXV.wJtLtDjs6Hm."
)
SAMPLE_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example"
)
