"""Checks and reshapes an upstream's answer before it is relayed to a client.

The forwarder sends the client's query under a fresh random id; `accept` says whether a
packet is the upstream's answer to exactly that query, `with_id` puts the client's id
back, and `fit` truncates (TC set, question kept) an answer too big for the client's
UDP size. Pure: bytes in, bytes out; no sockets, no clock.
"""

from __future__ import annotations

import struct
from typing import Any

from dnslib import QTYPE, DNSBuffer, DNSHeader, DNSQuestion, DNSRecord

from metadata_server.dns.answer import HEADER_LEN, OPCODE_MASK, QR, TC

RCODE_MASK = 0x000F


def with_id(packet: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + packet[2:]


def query_id(packet: bytes) -> int:
    (qid,) = struct.unpack_from("!H", packet)
    return int(qid)


def rcode(packet: bytes) -> int:
    (flags,) = struct.unpack_from("!H", packet, 2)
    return int(flags) & RCODE_MASK


def truncated(packet: bytes) -> bool:
    return bool(struct.unpack_from("!H", packet, 2)[0] & TC)


def _question(packet: bytes) -> tuple[Any, Any] | None:
    """The header and first question of a packet, or None when they do not parse."""
    try:
        buffer = DNSBuffer(packet)
        header = DNSHeader.parse(buffer)
        question = DNSQuestion.parse(buffer) if header.q else None
    except Exception:  # any parse failure means: not a usable packet
        return None
    return header, question


def accept(sent: bytes, received: bytes) -> bool:
    """Whether `received` answers `sent`: same id and opcode, QR set, same question.

    An error answer without a question (FORMERR, for one) is accepted too: upstreams
    send those, and the client should see them rather than wait for a timeout.
    """
    if len(received) < HEADER_LEN or received[:2] != sent[:2]:
        return False
    (sent_flags,) = struct.unpack_from("!H", sent, 2)
    (received_flags,) = struct.unpack_from("!H", received, 2)
    if not received_flags & QR or (sent_flags ^ received_flags) & OPCODE_MASK:
        return False
    ours, theirs = _question(sent), _question(received)
    if ours is None or theirs is None or ours[1] is None:
        return False
    header, question = theirs
    if question is None:
        return bool(header.rcode)
    mine = ours[1]
    return bool(
        header.q == 1
        and question.qtype == mine.qtype
        and question.qclass == mine.qclass
        and tuple(label.lower() for label in question.qname.label)
        == tuple(label.lower() for label in mine.qname.label)
    )


def fit(packet: bytes, limit: int | None) -> bytes:
    """`packet` when it fits in `limit` bytes (None: no limit), else a truncated copy."""
    if limit is None or len(packet) <= limit:
        return packet
    try:
        record = DNSRecord.parse(packet)
        record.rr = []
        record.auth = []
        record.ar = [rr for rr in record.ar if rr.rtype == QTYPE.OPT][:1]
        record.header.tc = 1
        smaller = bytes(record.pack())
    except Exception:  # unparseable: a bare header with TC still sends the client to TCP
        smaller = b""
    if not smaller or len(smaller) > limit:
        qid, flags = struct.unpack_from("!HH", packet)
        smaller = struct.pack("!6H", qid, flags | TC, 0, 0, 0, 0)
    return smaller
