"""IMDSv2-style session tokens: issued on PUT, bound to one guest, valid for a TTL.

A token is `<expiry>.<mac>`: the expiry in epoch seconds and an HMAC-SHA256 over the
guest's identity and that expiry, under a secret the server draws at start. Nothing is
stored per token; a restart invalidates them all (clients ask for a new one on 401, as
they do on EC2). Pure: the clock and the secret come in as arguments.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MIN_TTL = 1
MAX_TTL = 21600


def parse_ttl(text: str | None) -> int | None:
    """The TTL header's value as seconds, or None when missing or not in 1..21600."""
    if text is None or not text.strip().isdigit():
        return None
    ttl = int(text.strip())
    return ttl if MIN_TTL <= ttl <= MAX_TTL else None


def _signature(secret: bytes, subject: str, expiry: int) -> str:
    digest = hmac.new(secret, f"{subject}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(secret: bytes, subject: str, *, now: float, ttl: int) -> str:
    expiry = int(now) + ttl
    return f"{expiry}.{_signature(secret, subject, expiry)}"


def token_is_valid(secret: bytes, token: str, subject: str, *, now: float) -> bool:
    expiry_text, _, signature = token.partition(".")
    if not expiry_text.isdigit() or len(expiry_text) > 12 or not signature:
        return False
    expiry = int(expiry_text)
    if expiry <= now:
        return False
    return hmac.compare_digest(signature, _signature(secret, subject, expiry))
