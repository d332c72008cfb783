"""Answers one DNS query from a Zone: the pure core of the responder.

`answer(query, zone, max_udp=..., transport=...)` returns a Decision: a `Reply` packet,
a `Forward` instruction (names outside the zone, reverse names not for guests), or a
`Drop` (input not worth a reply). It never raises, whatever the bytes; it never sends,
waits, reads the clock or keeps state between calls: the endpoints in server.py do that.

In the zone: SOA and NS at the apex, A for guests and the metadata name, NODATA (SOA in
authority) for other types of existing names, NXDOMAIN (SOA in authority) for the rest.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

from dnslib import EDNS0, NS, PTR, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSLabel, DNSRecord

from metadata_server.dns.zone import EXPIRE, REFRESH, RETRY, Zone

HEADER_LEN = 12
MIN_UDP = 512  # RFC 1035; also the floor for any EDNS0 size a client gives (RFC 6891)
DEFAULT_MAX_UDP = 1232  # the DNS flag day 2020 size: no IP fragmentation on any path
MAX_QUERY_BYTES = 4096  # a real query is a header, one name and an OPT record

# Header bits.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
CD = 0x0010
OPCODE_MASK = 0x7800
OPCODE_QUERY = 0
DO = 0x8000  # in the OPT record's TTL field

FORMERR = RCODE.FORMERR
SERVFAIL = RCODE.SERVFAIL
NXDOMAIN = RCODE.NXDOMAIN
NOTIMP = RCODE.NOTIMP
REFUSED = RCODE.REFUSED
BADVERS_HIGH = 1  # BADVERS (16) >> 4, carried in the OPT record

CLASS_IN = 1
_WELL_KNOWN_OTHER_CLASSES = frozenset({2, 3, 4, 254, 255})  # CS, CH, HS, NONE, ANY
_NEVER_ASKED = frozenset({QTYPE.OPT, QTYPE.TSIG, QTYPE.TKEY})  # FORMERR as a question
_TRANSFERS = frozenset({QTYPE.AXFR, QTYPE.IXFR})  # refused: nothing transfers this zone
_ANY = QTYPE.ANY
_REVERSE_SUFFIX = ".in-addr.arpa"


@dataclass(frozen=True, slots=True)
class Reply:
    """Send `packet` to the client."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask the upstreams `query`; fit the answer in `limit` bytes (None over TCP).

    `failure` is the SERVFAIL to send when no upstream gives a usable answer in time.
    """

    query: bytes
    limit: int | None
    failure: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing; `reason` is for a debug log."""

    reason: str


Decision = Reply | Forward | Drop
Transport = Literal["udp", "tcp"]


def answer(
    query: bytes,
    zone: Zone,
    *,
    max_udp: int = DEFAULT_MAX_UDP,
    transport: Transport = "udp",
) -> Decision:
    """Decide what to do with one query. `max_udp` caps UDP replies (and is advertised)."""
    if len(query) < HEADER_LEN:
        return Drop("shorter than a DNS header")
    _qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", query)
    if flags & QR:
        return Drop("a response, not a query")  # answering answers would let two servers loop
    if (flags & OPCODE_MASK) >> 11 != OPCODE_QUERY:
        return Reply(header_only(query, NOTIMP))
    # One question, nothing else but an optional OPT record: this also bounds the work the
    # parser can be made to do (no long chains of compression pointers to follow).
    if qdcount != 1 or ancount or nscount or arcount > 1 or len(query) > MAX_QUERY_BYTES:
        return Reply(header_only(query, FORMERR))
    try:
        record = DNSRecord.parse(query)
    except Exception:  # dnslib raises several kinds on bad input; all mean FORMERR
        return Reply(header_only(query, FORMERR))
    try:
        return _decide(query, record, zone, max_udp, transport)
    except Exception:  # a name dnslib parsed but cannot pack back, for example
        return Reply(header_only(query, FORMERR))


def header_only(query: bytes, rcode: int) -> bytes:
    """A reply of just a header (same id, opcode, RD and CD) carrying `rcode`."""
    qid, flags = struct.unpack_from("!HH", query)
    return struct.pack("!6H", qid, QR | (flags & (OPCODE_MASK | RD | CD)) | rcode, 0, 0, 0, 0)


def _decide(query: bytes, record: Any, zone: Zone, max_udp: int, transport: Transport) -> Decision:
    question = record.q
    opt = record.ar[0] if record.ar and record.ar[0].rtype == QTYPE.OPT else None
    client_udp = MIN_UDP
    if opt is not None:
        if opt.rname.label:  # the OPT record is owned by the root, always
            return Reply(header_only(query, FORMERR))
        client_udp = max(MIN_UDP, opt.rclass)
    limit = None if transport == "tcp" else min(client_udp, max_udp)
    builder = _Builder(record, zone, opt, max_udp, limit)
    if opt is not None and (opt.ttl >> 16) & 0xFF != 0:
        return Reply(builder.finish(0, ext_rcode=BADVERS_HIGH))  # only EDNS version 0

    if question.qclass != CLASS_IN:
        known = question.qclass in _WELL_KNOWN_OTHER_CLASSES
        return Reply(builder.finish(REFUSED if known else FORMERR))
    qtype = question.qtype
    if qtype in _NEVER_ASKED:
        return Reply(builder.finish(FORMERR))

    name = _name_of(question.qname.label)
    if zone.contains(name):
        if qtype in _TRANSFERS:
            return Reply(builder.finish(REFUSED))
        return Reply(_authoritative(builder, name, qtype, zone))
    if name.endswith(_REVERSE_SUFFIX):
        target = zone.pointer(name)
        if target is not None:
            return Reply(_reverse(builder, target, qtype, zone))
    if not zone.forwarding or qtype in _TRANSFERS:
        return Reply(builder.finish(REFUSED))
    return Forward(query=query, limit=limit, failure=builder.finish(SERVFAIL))


def _name_of(labels: tuple[bytes, ...]) -> str:
    """The lower-case text of a name, for lookups; odd labels are escaped so they match
    nothing and cannot pass for other labels (`a.b` as one label is not `a`, `b`)."""
    raw = b".".join(labels).lower()
    if raw.count(b".") + 1 == len(labels) and b"\\" not in raw:
        return raw.decode("latin-1")
    if not labels:
        return ""
    return ".".join(
        label.lower().decode("latin-1").replace("\\", "\\\\").replace(".", "\\.")
        for label in labels
    )


def _authoritative(builder: _Builder, name: str, qtype: int, zone: Zone) -> bytes:
    qname = builder.qname
    if name == zone.origin:
        if qtype in (QTYPE.SOA, _ANY):
            builder.answers.append(builder.soa(qname))
        if qtype in (QTYPE.NS, _ANY):
            builder.answers.append(RR(qname, QTYPE.NS, ttl=zone.ttl, rdata=NS(zone.metadata_fqdn)))
            builder.additional.append(
                RR(zone.metadata_fqdn, QTYPE.A, ttl=zone.ttl, rdata=A(zone.metadata_address))
            )
    elif qtype in (QTYPE.A, _ANY):
        for address in zone.addresses(name):
            builder.answers.append(RR(qname, QTYPE.A, ttl=zone.ttl, rdata=A(address)))
    if builder.answers:
        return builder.finish(0, aa=True)
    builder.authority.append(builder.soa(zone.origin))
    return builder.finish(0 if zone.exists(name) else NXDOMAIN, aa=True)


def _reverse(builder: _Builder, target: str, qtype: int, zone: Zone) -> bytes:
    qname = builder.qname
    if qtype in (QTYPE.PTR, _ANY):
        builder.answers.append(RR(qname, QTYPE.PTR, ttl=zone.ttl, rdata=PTR(target)))
    else:
        # No reverse zone is ours, only these names: the SOA for the negative answer's
        # TTL is owned by the name itself.
        builder.authority.append(builder.soa(qname))
    return builder.finish(0, aa=True)


class _Builder:
    """One reply under construction: the sections, then `finish` packs and fits it."""

    def __init__(self, record: Any, zone: Zone, opt: Any, max_udp: int, limit: int | None) -> None:
        self.record = record
        self.zone = zone
        self.opt = opt
        self.max_udp = max_udp
        self.limit = limit
        self.qname = record.q.qname
        self.answers: list[Any] = []
        self.authority: list[Any] = []
        self.additional: list[Any] = []

    def soa(self, owner: DNSLabel | str) -> Any:
        zone = self.zone
        times = (zone.serial, REFRESH, RETRY, EXPIRE, zone.ttl)
        return RR(
            owner, QTYPE.SOA, ttl=zone.ttl, rdata=SOA(zone.metadata_fqdn, zone.hostmaster, times)
        )

    def finish(self, rcode: int, *, aa: bool = False, ext_rcode: int = 0) -> bytes:
        query_flags = self.record.header.bitmap
        flags = QR | (query_flags & (RD | CD)) | (rcode & 0xF)
        if aa:
            flags |= AA
        if self.zone.forwarding:
            flags |= RA
        reply = DNSRecord(
            DNSHeader(id=self.record.header.id, bitmap=flags),
            questions=[self.record.q],
            rr=self.answers,
            auth=self.authority,
            ar=list(self.additional),
        )
        opt_record = None
        if self.opt is not None:
            opt_record = EDNS0(
                udp_len=self.max_udp,
                ext_rcode=ext_rcode,
                flags="do" if self.opt.ttl & DO else "",
            )
            reply.add_ar(opt_record)
        packet = bytes(reply.pack())
        if self.limit is not None and len(packet) > self.limit:
            # Too big for the client's UDP size: the question alone, TC set; the client
            # asks again over TCP and gets everything.
            reply.rr = []
            reply.auth = []
            reply.ar = [opt_record] if opt_record is not None else []
            reply.header.tc = 1
            packet = bytes(reply.pack())
        return packet
