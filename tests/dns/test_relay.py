"""Checks on upstream answers before they are relayed."""

from __future__ import annotations

import struct

import pytest
from dnslib import DNSRecord

from metadata_server.dns import relay
from tests.dns.support import StubUpstream, query

SENT = query("example.com", qid=0x5555)


def stub_answer(packet: bytes, name: str = "big.example.com") -> bytes:
    return StubUpstream().reply(packet, "udp") or b""


def flip(packet: bytes, offset: int, value: int) -> bytes:
    return packet[:offset] + bytes([value]) + packet[offset + 1 :]


GOOD_REPLY = stub_answer(SENT)
ACCEPT = {
    "matching": (GOOD_REPLY, True),
    "question-in-other-case": (stub_answer(query("EXAMPLE.com", qid=0x5555)), True),
    "other-id": (relay.with_id(GOOD_REPLY, 0x5556), False),
    "not-a-response": (flip(GOOD_REPLY, 2, GOOD_REPLY[2] & 0x7F), False),
    "other-question": (stub_answer(query("example.org", qid=0x5555)), False),
    "other-type": (stub_answer(query("example.com", "AAAA", qid=0x5555)), False),
    "error-without-question": (struct.pack("!6H", 0x5555, 0x8001, 0, 0, 0, 0), True),
    "noerror-without-question": (struct.pack("!6H", 0x5555, 0x8000, 0, 0, 0, 0), False),
    "short": (GOOD_REPLY[:8], False),
    "garbage-after-header": (GOOD_REPLY[:12] + b"\xff" * 3, False),
}


@pytest.mark.parametrize(("received", "expected"), ACCEPT.values(), ids=ACCEPT.keys())
def test_accept(received: bytes, expected: bool) -> None:
    assert relay.accept(SENT, received) is expected


def test_fit_keeps_what_fits_and_truncates_the_rest() -> None:
    big = stub_answer(query("big.example.com"))
    assert len(big) > 1232
    assert relay.fit(big, None) == big
    assert relay.fit(big, 4096) == big
    small = DNSRecord.parse(relay.fit(big, 512))
    assert small.header.tc == 1
    assert small.rr == []
    assert str(small.q.qname) == "big.example.com."


def test_fit_of_garbage_is_a_bare_truncated_header() -> None:
    garbage = struct.pack("!6H", 7, 0x8180, 1, 0, 0, 0) + b"\xff" * 600
    out = relay.fit(garbage, 512)
    assert out == struct.pack("!6H", 7, 0x8180 | 0x0200, 0, 0, 0, 0)
