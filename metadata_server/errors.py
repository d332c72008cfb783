"""The one exception tree of the service.

Every error a caller can cause is a `MetadataError`; each class knows its HTTP status,
and one middleware turns it into the JSON body `{"error", "field", "detail"}`. The CLI
prints the same `detail` on one line. Pure: no I/O, no framework imports.

The codes are `ErrorCode`; the classes elsewhere (xen/, iso/, dhcp/) take theirs from it.
A `detail` must never carry a secret (plain password, hash, token, user-data).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum, unique
from typing import Any


@unique
class ErrorCode(StrEnum):
    """Every error code the server answers with (the JSON body's `error`), in one place:
    published in the OpenAPI `Error` schema; a code always comes with one HTTP status."""

    INTERNAL = "internal"
    INVALID = "invalid"
    CONFLICT = "conflict"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    GONE = "gone"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    STORAGE_FULL = "storage_full"
    CONFIG = "config"
    HTTP = "http"
    XEN = "xen"
    XEN_GUEST_TIMEOUT = "xen_guest_timeout"
    XEN_GUEST_GONE = "xen_guest_gone"
    XEN_GUEST_FAILED = "xen_guest_failed"
    DHCP_DAEMON = "dhcp_daemon"
    DHCP_WRITE = "dhcp_write"
    ISO_CONFLICT = "iso_conflict"
    NO_SUCH_DOMAIN = "no_such_domain"
    WRONG_DOMAIN = "wrong_domain"
    ISO_STORE = "iso_store"
    IMAGE = "image"
    IMAGE_TOOL = "image_tool"
    TOOL_MISSING = "tool_missing"
    NOT_LAUNCHED = "not_launched"
    LAUNCH_FAILED = "launch_failed"
    CLEANUP_INCOMPLETE = "cleanup_incomplete"


class MetadataError(Exception):
    """Base class: an error with a stable short code, an HTTP status and a message."""

    http_status = 500
    code: ErrorCode = ErrorCode.INTERNAL
    retry_after: float | None = None  # seconds, sent as Retry-After when set

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "field": self.field, "detail": self.detail}


class InvalidInput(MetadataError):
    """A value failed validation (bad MAC, bad JSON type, unknown field, ...)."""

    http_status = 400
    code = ErrorCode.INVALID


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
    code = ErrorCode.CONFLICT

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
    code = ErrorCode.UNAUTHORIZED


class Forbidden(MetadataError):
    http_status = 403
    code = ErrorCode.FORBIDDEN


class NotFound(MetadataError):
    http_status = 404
    code = ErrorCode.NOT_FOUND


class MethodNotAllowed(MetadataError):
    """A method the resource does not have; `allowed` goes into the Allow header."""

    http_status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED

    def __init__(self, detail: str, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allowed = allowed


class Conflict(MetadataError):
    """A unique field (MAC, IPv4 address, hostname+domain) is held by another record."""

    http_status = 409
    code = ErrorCode.CONFLICT

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
    code = ErrorCode.GONE


class PayloadTooLarge(MetadataError):
    http_status = 413
    code = ErrorCode.TOO_LARGE


class TooManyRequests(MetadataError):
    http_status = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(MetadataError):
    """Something the request needs cannot be had now (the registry database, Xen, ...);
    nothing was changed, and the same request may work later."""

    http_status = 503
    code = ErrorCode.UNAVAILABLE

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InsufficientStorage(Unavailable):
    """The registry's disk is full: nothing was written. An `Unavailable`, so whatever
    copes with an outage (a guest's best-effort `fetched` mark) copes with this too."""

    http_status = 507
    code = ErrorCode.STORAGE_FULL


class ConfigError(MetadataError):
    """A bad configuration file, variable or flag: reported at start, nothing started."""

    http_status = 500
    code = ErrorCode.CONFIG


def os_reason(error: OSError) -> str:
    """An OSError in words for a message: the two an operator meets most, said plainly."""
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    if error.errno == errno.EROFS:
        return "the file system is read-only"
    return error.strerror or str(error)
