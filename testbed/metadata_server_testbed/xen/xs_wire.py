"""The xenstore wire format: message header, message types, error names, payload helpers.

Every message, in either direction, is a 16-byte header (`struct xsd_sockmsg`: uint32
type, req_id, tx_id, len, in host byte order) followed by `len` payload bytes, at most
4096. Payloads are mostly nul-terminated strings; errors travel as the errno *name*
("ENOENT"). Source: xen/include/public/io/xs_wire.h and docs/misc/xenstore.txt (Xen 4.17).

Pure: bytes in, values out. No sockets, no asyncio, no tree.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct("=IIII")  # native byte order, standard sizes: the C struct on the host
HEADER_SIZE = HEADER.size
PAYLOAD_MAX = 4096  # XENSTORE_PAYLOAD_MAX: a longer message kills the connection
ABS_PATH_MAX = 3072  # XENSTORE_ABS_PATH_MAX
REL_PATH_MAX = 2048  # XENSTORE_REL_PATH_MAX, also xenstored's default path-length quota
DOMID_FIRST_RESERVED = 0x7FF0  # xen.h: domids at or above are special (DOMID_SELF, ...)
DOMID_SELF = 0x7FF0


class MsgType(enum.IntEnum):
    """`enum xsd_sockmsg_type`; 20 (XS_RESTRICT) was removed and stays unused."""

    CONTROL = 0  # formerly XS_DEBUG
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


# The error names xs_wire.h lists (xsd_errors[]); anything else is sent as EINVAL.
ERROR_NAMES = frozenset(
    {
        "EINVAL",
        "EACCES",
        "EEXIST",
        "EISDIR",
        "ENOENT",
        "ENOMEM",
        "ENOSPC",
        "EIO",
        "ENOTEMPTY",
        "ENOSYS",
        "EROFS",
        "EBUSY",
        "EAGAIN",
        "EISCONN",
        "E2BIG",
        "EPERM",
    }
)


class XsError(Exception):
    """A request failed with an xenstore error name (`XsError("ENOENT")`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name if name in ERROR_NAMES else "EINVAL"


@dataclass(frozen=True)
class Header:
    type: int
    req_id: int
    tx_id: int
    length: int


def parse_header(raw: bytes) -> Header:
    """The first HEADER_SIZE bytes → Header. The caller checks `length` against PAYLOAD_MAX."""
    kind, req_id, tx_id, length = HEADER.unpack_from(raw)
    return Header(kind, req_id, tx_id, length)


def frame(kind: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Header + payload, ready to send."""
    return HEADER.pack(kind, req_id, tx_id, len(payload)) + payload


def error_frame(req_id: int, tx_id: int, name: str) -> bytes:
    """An XS_ERROR reply: the errno name, nul-terminated."""
    name = name if name in ERROR_NAMES else "EINVAL"
    return frame(MsgType.ERROR, req_id, tx_id, name.encode() + b"\0")


def strings(payload: bytes) -> list[bytes]:
    """The nul-terminated strings at the start of a payload; bytes after the last nul
    are not a string (xenstored's get_strings() ignores them too)."""
    parts = payload.split(b"\0")
    return parts[:-1]


def one_arg(payload: bytes) -> bytes | None:
    """The single argument of a one-argument request: exactly one nul, at the end."""
    if payload.count(b"\0") != 1 or not payload.endswith(b"\0"):
        return None
    return payload[:-1]


def join_strings(items: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Strings → `a\\0b\\0` (each one nul-terminated)."""
    return b"".join(item + b"\0" for item in items)


def c_atoi(text: bytes) -> int:
    """C atoi(): optional whitespace and sign, then leading digits; nothing parsed is 0."""
    s = text.lstrip(b" \t\n\r\f\v")
    sign = 1
    if s[:1] in (b"+", b"-"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    digits = b""
    for byte in s:
        if 0x30 <= byte <= 0x39:
            digits += bytes([byte])
        else:
            break
    return sign * int(digits) if digits else 0
