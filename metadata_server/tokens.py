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

from metadata_server.digits import ascii_int

MIN_TTL = 1
MAX_TTL = 21600


def parse_ttl(text: str | None) -> int | None:
    """The TTL header's value as seconds, or None when missing, not ASCII digits or not
    in 1..21600."""
    ttl = ascii_int(text.strip(" \t")) if text is not None else None
    return ttl if ttl is not None and MIN_TTL <= ttl <= MAX_TTL else None


def _signature(secret: bytes, subject: str, expiry: int) -> str:
    digest = hmac.new(secret, f"{subject}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue_token(secret: bytes, subject: str, *, now: float, ttl: int) -> str:
    expiry = int(now) + ttl
    return f"{expiry}.{_signature(secret, subject, expiry)}"


def token_is_valid(secret: bytes, token: str, subject: str, *, now: float) -> bool:
    expiry_text, _, signature = token.partition(".")
    expiry = ascii_int(expiry_text, max_digits=12)
    if expiry is None or not signature:
        return False
    if expiry <= now:
        return False
    return hmac.compare_digest(signature, _signature(secret, subject, expiry))
