"""The one exception tree of the service.

Every error a caller can cause is a `MetadataError`; each class knows its HTTP status,
and one middleware turns it into the JSON body `{"error", "field", "detail"}`. The CLI
prints the same `detail` on one line. Pure: no I/O, no framework imports.

A `detail` must never carry a secret (plain password, hash, token, user-data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class MetadataError(Exception):
    """Base class: an error with a stable short code, an HTTP status and a message."""

    http_status = 500
    code = "internal"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "field": self.field, "detail": self.detail}


class InvalidInput(MetadataError):
    """A value failed validation (bad MAC, bad JSON type, unknown field, ...)."""

    http_status = 400
    code = "invalid"


@dataclass(frozen=True)
class RowError:
    """One bad row of a bulk import."""

    index: int
    field: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class InvalidRows(InvalidInput):
    """A bulk import with bad rows: lists every one of them."""

    def __init__(self, rows: list[RowError]) -> None:
        noun = "row is" if len(rows) == 1 else "rows are"
        super().__init__(f"{len(rows)} {noun} invalid; nothing was imported")
        self.rows = rows

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["rows"] = [row.to_json() for row in self.rows]
        return body


class ConflictRows(MetadataError):
    """A bulk import whose rows clash with stored records or with each other."""

    http_status = 409
    code = "conflict"

    def __init__(self, rows: list[RowError]) -> None:
        noun = "row clashes" if len(rows) == 1 else "rows clash"
        super().__init__(f"{len(rows)} {noun} with other records; nothing was imported")
        self.rows = rows

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["rows"] = [row.to_json() for row in self.rows]
        return body


class Unauthorized(MetadataError):
    http_status = 401
    code = "unauthorized"


class Forbidden(MetadataError):
    http_status = 403
    code = "forbidden"


class NotFound(MetadataError):
    http_status = 404
    code = "not_found"


class MethodNotAllowed(MetadataError):
    """A method the resource does not have; `allowed` goes into the Allow header."""

    http_status = 405
    code = "method_not_allowed"

    def __init__(self, detail: str, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allowed = allowed


class Conflict(MetadataError):
    """A unique field (MAC, IPv4 address, hostname+domain) is held by another record."""

    http_status = 409
    code = "conflict"

    def __init__(self, detail: str, *, field: str, holder: str) -> None:
        super().__init__(detail, field=field)
        self.holder = holder

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["holder"] = self.holder
        return body


class Gone(MetadataError):
    """A secret that was served once and is now withheld until the admin re-arms."""

    http_status = 410
    code = "gone"


class PayloadTooLarge(MetadataError):
    http_status = 413
    code = "too_large"


class TooManyRequests(MetadataError):
    http_status = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(MetadataError):
    """Something the request needs cannot be had now (the registry database, Xen, ...);
    nothing was changed, and the same request may work later."""

    http_status = 503
    code = "unavailable"


class InsufficientStorage(Unavailable):
    """The registry's disk is full: nothing was written. An `Unavailable`, so whatever
    copes with an outage (a guest's best-effort `fetched` mark) copes with this too."""

    http_status = 507
    code = "storage_full"


class ConfigError(MetadataError):
    """A bad configuration file, variable or flag: reported at start, nothing started."""

    http_status = 500
    code = "config"
