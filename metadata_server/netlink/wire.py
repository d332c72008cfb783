"""The few fields of rtnetlink event messages that the watches read, taken with struct.

The watches need little of each event: its type, address family and interface index, and
one or two attributes (a link's name and master, a neighbour's address). pyroute2 stays
the library for route lookups, dumps and addresses; decoding every attribute of every
event through it was most of the server's CPU in a boot storm (a link event carries some
thirty attributes, statistics included, and each guest's boot brings several link and
neighbour events). The one request made for every guest connection, a neighbour entry
(RTM_GETNEIGH), is built and read here too: through pyroute2 it cost about 0.6 ms of CPU
each, four times per booting guest. Layouts are those of <linux/netlink.h>, <linux/rtnetlink.h>,
<linux/if_link.h> and <linux/neighbour.h>, in host byte order. A message that does not
fit its own length ends the datagram's parsing (the rest cannot be framed); a message
too short for its header is skipped.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, sender port id
RTATTR = struct.Struct("=HH")  # length, type

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29

RTM_GETNEIGH = 30
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x01

IFLA_IFNAME = 3
IFLA_MASTER = 10
NDA_DST = 1
NDA_LLADDR = 2

# per message type: the length of its fixed header, and where the interface index is in
# it (None: the message has none). The family is the first byte of every one of them.
_FAMILY_HEADER = struct.Struct("=B")
_INDEX = struct.Struct("=i")
_LAYOUTS: dict[int, tuple[int, int | None]] = {
    RTM_NEWLINK: (16, 4),  # struct ifinfomsg
    RTM_DELLINK: (16, 4),
    RTM_NEWADDR: (8, 4),  # struct ifaddrmsg (index is unsigned; ours are small)
    RTM_DELADDR: (8, 4),
    RTM_NEWROUTE: (12, None),  # struct rtmsg
    RTM_DELROUTE: (12, None),
    RTM_NEWNEIGH: (12, 4),  # struct ndmsg
    RTM_DELNEIGH: (12, 4),
}


class WireError(ValueError):
    """A datagram that cannot be framed into messages."""


def _align(length: int) -> int:
    return (length + 3) & ~3


@dataclass(frozen=True)
class Event:
    """One rtnetlink message: its type, family, interface index (0 when it has none) and
    its top-level attributes as raw bytes."""

    kind: int
    family: int
    index: int
    attributes: Mapping[int, bytes]

    def text(self, attribute: int) -> str | None:
        raw = self.attributes.get(attribute)
        if raw is None:
            return None
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def u32(self, attribute: int) -> int | None:
        raw = self.attributes.get(attribute)
        if raw is None or len(raw) < 4:
            return None
        value: int = struct.unpack_from("=I", raw)[0]
        return value

    def address(self, attribute: int) -> str | None:
        raw = self.attributes.get(attribute)
        if raw is None or len(raw) not in (4, 16):
            return None
        return str(ipaddress.ip_address(raw))


def _attributes(body: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(body, offset)
        if length < RTATTR.size or offset + length > end:
            break
        found.setdefault(kind & 0x3FFF, body[offset + RTATTR.size : offset + length])
        offset += _align(length)
    return found


def parse(datagram: bytes) -> Iterator[Event]:
    """The link, address, route and neighbour messages of one datagram, in order (others,
    such as NLMSG_DONE or types the watches never ask for, are passed over)."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(datagram):
        length, kind, _flags, _sequence, _port = NLMSG_HEADER.unpack_from(datagram, offset)
        if length < NLMSG_HEADER.size or offset + length > len(datagram):
            raise WireError(f"a message of {length} bytes at {offset} of {len(datagram)}")
        layout = _LAYOUTS.get(kind)
        start, end = offset + NLMSG_HEADER.size, offset + length
        if layout is not None and start + layout[0] <= end:
            header, index_at = layout
            (family,) = _FAMILY_HEADER.unpack_from(datagram, start)
            index = _INDEX.unpack_from(datagram, start + index_at)[0] if index_at is not None else 0
            yield Event(kind, family, index, _attributes(datagram, start + header, end))
        offset += _align(length)


# --- one neighbour entry asked for (RTM_GETNEIGH with NDA_DST) ---------------------------

_NDMSG = struct.Struct("=BBHiHBB")  # family, pad, pad, ifindex, state, flags, type
_ERROR = struct.Struct("=i")  # struct nlmsgerr begins with the (negative) errno


@dataclass(frozen=True)
class NeighbourReply:
    """The kernel's answer to one neighbour request: the entry's state and link-layer
    address, or the errno it refused with (ENOENT: no entry)."""

    sequence: int
    state: int = 0
    lladdr: str | None = None
    error: int = 0


def neighbour_request(sequence: int, address: str, ifindex: int) -> bytes:
    """RTM_GETNEIGH for the entry of `address` on interface `ifindex` (one entry, not a
    dump: a host full of guests has a table as long as its guests)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    attribute = RTATTR.pack(RTATTR.size + len(ip.packed), NDA_DST) + ip.packed
    body = _NDMSG.pack(family, 0, 0, ifindex, 0, 0, 0) + attribute
    length = NLMSG_HEADER.size + len(body)
    return NLMSG_HEADER.pack(length, RTM_GETNEIGH, NLM_F_REQUEST, sequence, 0) + body


def neighbour_replies(datagram: bytes) -> Iterator[NeighbourReply]:
    """The neighbour entries and errors of one datagram read on the request socket."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(datagram):
        length, kind, _flags, sequence, _port = NLMSG_HEADER.unpack_from(datagram, offset)
        if length < NLMSG_HEADER.size or offset + length > len(datagram):
            raise WireError(f"a message of {length} bytes at {offset} of {len(datagram)}")
        start, end = offset + NLMSG_HEADER.size, offset + length
        if kind == NLMSG_ERROR and start + _ERROR.size <= end:
            (code,) = _ERROR.unpack_from(datagram, start)
            yield NeighbourReply(sequence, error=-code)
        elif kind == RTM_NEWNEIGH and start + _NDMSG.size <= end:
            state = _NDMSG.unpack_from(datagram, start)[4]
            found = _attributes(datagram, start + _NDMSG.size, end)
            raw = found.get(NDA_LLADDR)
            lladdr = ":".join(f"{b:02x}" for b in raw) if raw else None
            yield NeighbourReply(sequence, state=state, lladdr=lladdr)
        offset += _align(length)
