"""The demo guest that `serve --demo` registers: reachable from 127.0.0.1, so a newcomer
can try the guest API with curl on any machine, without a bridge or root."""

from __future__ import annotations

import base64
import struct

from metadata_server.errors import NotFound
from metadata_server.registry import Registry

DEMO_MAC = "02:00:00:00:00:01"


def _demo_public_key() -> str:
    # A well-formed ed25519 public key whose private half does not exist (all-zero
    # point bytes but one): it shows the format and can never log anybody in.
    blob = b"".join(
        struct.pack(">I", len(part)) + part for part in (b"ssh-ed25519", bytes(31) + b"\x01")
    )
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} demo@metadata-server"


DEMO_GUEST = {
    "hostname": "demo",
    "domain": "guests.internal",
    "ipv4": {"address": "127.0.0.1", "prefix": 8},
    "dns": ["127.0.0.53"],
    "ssh_keys": [_demo_public_key()],
    "user_data": "#!/bin/sh\necho 'hello from the demo user-data'\n",
    "metadata": {"role": "demo"},
}


async def ensure_demo_guest(registry: Registry) -> str | None:
    """Register the demo guest unless it exists; returns a generated password, if any."""
    try:
        await registry.get(DEMO_MAC)
        return None
    except NotFound:
        result = await registry.put(DEMO_MAC, dict(DEMO_GUEST))
        return result.generated_password


def demo_instructions(guest_url: str, admin_url: str, token_hint: str) -> str:
    return f"""
Demo guest {DEMO_MAC} ("demo") is served to callers from 127.0.0.1.

Be the guest:
  curl -s {guest_url}/v1/config
  curl -s {guest_url}/v1/config.txt
  curl -s {guest_url}/v1/user-data
  curl -s -X POST -d state=configured -d message=ok {guest_url}/v1/status

Be the admin:
  curl -s -H "Authorization: Bearer $({token_hint})" {admin_url}/api/v1/vms
  curl -s -X POST -H "Authorization: Bearer $({token_hint})" {admin_url}/api/v1/vms/{DEMO_MAC}/rearm
  .venv/bin/metadata-server vm list
"""
