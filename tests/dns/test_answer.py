"""The pure answer function: one query in, one decision out, for every kind of query."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord

from metadata_server.dns.answer import Drop, Forward, Reply, answer
from metadata_server.dns.zone import Zone
from tests.dns.support import ZONE, dns_settings, make_vm, query

GUESTS = [
    make_vm(1),  # no domain: the server's default, which is the zone → guest1.guests.internal
    make_vm(2, domain="other.example"),  # elsewhere: not in the zone
    make_vm(3, domain=ZONE),  # spelled out
]
FORWARDING = Zone.build(
    GUESTS, dns_settings(upstreams=(("127.0.0.1", 5300),)), default_domain=ZONE, serial=7
)
LOCAL = Zone.build(GUESTS, dns_settings(), default_domain=ZONE, serial=7)
SOA_TEXT = f"metadata.{ZONE}. hostmaster.{ZONE}. 7 3600 600 86400 60"


def raw(
    name: bytes = b"\x06guest1\x06guests\x08internal\x00",
    *,
    qtype: int = 1,
    qclass: int = 1,
    flags: int = 0x0100,
    counts: tuple[int, int, int, int] = (1, 0, 0, 0),
    tail: bytes = b"",
) -> bytes:
    """A hand-made query, for the shapes dnslib would refuse to build."""
    return (
        struct.pack("!6H", 0xBEEF, flags, *counts) + name + struct.pack("!HH", qtype, qclass) + tail
    )


def with_opt(packet: bytes, *, version: int = 0, udp: int = 1232, do: bool = False) -> bytes:
    record = DNSRecord.parse(packet)
    record.add_ar(EDNS0(udp_len=udp, version=version, flags="do" if do else ""))
    out: bytes = record.pack()
    return out


def reply_to(packet: bytes, zone: Zone, **options: Any) -> Any:
    decision = answer(packet, zone, **options)
    assert isinstance(decision, Reply)
    return DNSRecord.parse(decision.packet)


@dataclass
class Case:
    packet: bytes
    kind: type = Reply
    rcode: int = 0
    answers: list[str] = field(default_factory=list)  # "TYPE rdata"
    authority: list[str] = field(default_factory=list)  # "owner TYPE"
    additional: list[str] = field(default_factory=list)
    aa: bool | None = None
    tc: bool = False
    zone: Zone = FORWARDING
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    # --- names that exist ---------------------------------------------------------------
    "a-default-domain": Case(query(f"guest1.{ZONE}"), answers=["A 198.18.0.3"], aa=True),
    "a-explicit-domain": Case(query(f"guest3.{ZONE}"), answers=["A 198.18.0.5"], aa=True),
    "a-case-insensitive": Case(query("GuEsT1.GUESTS.Internal"), answers=["A 198.18.0.3"]),
    "a-metadata-name": Case(query(f"metadata.{ZONE}"), answers=["A 169.254.169.254"], aa=True),
    "ptr-guest": Case(
        query("3.0.18.198.in-addr.arpa", "PTR"), answers=[f"PTR guest1.{ZONE}."], aa=True
    ),
    "ptr-case-insensitive": Case(
        query("5.0.18.198.IN-ADDR.Arpa", "PTR"), answers=[f"PTR guest3.{ZONE}."]
    ),
    "ptr-metadata": Case(
        query("254.169.254.169.in-addr.arpa", "PTR"), answers=[f"PTR metadata.{ZONE}."]
    ),
    "soa-apex": Case(query(ZONE, "SOA"), answers=[f"SOA {SOA_TEXT}"], aa=True),
    "ns-apex": Case(
        query(ZONE, "NS"),
        answers=[f"NS metadata.{ZONE}."],
        additional=[f"metadata.{ZONE}. A"],
        aa=True,
    ),
    "any-apex": Case(
        query(ZONE, "ANY"),
        answers=[f"SOA {SOA_TEXT}", f"NS metadata.{ZONE}."],
        additional=[f"metadata.{ZONE}. A"],
    ),
    "any-guest": Case(query(f"guest1.{ZONE}", "ANY"), answers=["A 198.18.0.3"]),
    # --- NODATA: the name exists, the type does not ----------------------------------------
    "nodata-aaaa": Case(query(f"guest1.{ZONE}", "AAAA"), authority=[f"{ZONE}. SOA"], aa=True),
    "nodata-mx": Case(query(f"guest3.{ZONE}", "MX"), authority=[f"{ZONE}. SOA"]),
    "nodata-apex-a": Case(query(ZONE, "A"), authority=[f"{ZONE}. SOA"]),
    "nodata-reverse-txt": Case(
        query("3.0.18.198.in-addr.arpa", "TXT"), authority=["3.0.18.198.in-addr.arpa. SOA"]
    ),
    # --- NXDOMAIN in the zone ----------------------------------------------------------
    "nxdomain": Case(query(f"nobody.{ZONE}"), rcode=3, authority=[f"{ZONE}. SOA"], aa=True),
    "nxdomain-guest-of-other-domain": Case(
        query(f"guest2.{ZONE}"), rcode=3, authority=[f"{ZONE}. SOA"]
    ),
    "nxdomain-below-a-guest": Case(
        query(f"www.guest1.{ZONE}"), rcode=3, authority=[f"{ZONE}. SOA"]
    ),
    "nxdomain-label-with-a-dot": Case(
        raw(b"\x0dguest1.guests\x08internal\x00"), rcode=3, authority=[f"{ZONE}. SOA"]
    ),
    # --- outside the zone --------------------------------------------------------------
    "forward-outside": Case(query("example.com"), kind=Forward),
    "forward-guest-of-other-domain": Case(query("guest2.other.example"), kind=Forward),
    "forward-reverse-not-a-guest": Case(query("99.0.18.198.in-addr.arpa", "PTR"), kind=Forward),
    "forward-root": Case(query(".", "NS"), kind=Forward),
    "forward-suffix-is-not-zone": Case(query("xguests.internal"), kind=Forward),
    "refused-without-upstreams": Case(query("example.com"), rcode=5, zone=LOCAL, aa=False),
    "refused-reverse-without-upstreams": Case(
        query("99.0.18.198.in-addr.arpa", "PTR"), rcode=5, zone=LOCAL
    ),
    "refused-axfr": Case(query(ZONE, "AXFR"), rcode=5),
    "refused-axfr-outside": Case(query("example.com", "AXFR"), rcode=5),
    "refused-chaos-class": Case(raw(b"\x07version\x04bind\x00", qtype=16, qclass=3), rcode=5),
    # --- bad input -----------------------------------------------------------------------
    "formerr-unknown-class": Case(raw(qclass=77), rcode=1),
    "formerr-no-question": Case(raw(counts=(0, 0, 0, 0))[:12], rcode=1),
    "formerr-two-questions": Case(raw(counts=(2, 0, 0, 0)), rcode=1),
    "formerr-answer-in-query": Case(raw(counts=(1, 1, 0, 0)), rcode=1),
    "formerr-truncated-name": Case(raw()[:20], rcode=1),
    "formerr-truncated-type": Case(raw()[:-3], rcode=1),
    "formerr-pointer-to-itself": Case(raw(b"\xc0\x0c"), rcode=1),
    "formerr-pointer-forwards": Case(raw(b"\xc0\x20"), rcode=1),
    "formerr-pointer-loop-via-label": Case(raw(b"\x01a\xc0\x0c"), rcode=1),
    "formerr-name-over-255": Case(
        raw(b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x06guests\x08internal\x00"),
        rcode=1,
        options={"transport": "tcp"},
    ),
    "formerr-qtype-opt": Case(raw(qtype=41), rcode=1),
    "formerr-opt-not-root": Case(
        raw(counts=(1, 0, 0, 1), tail=b"\x01x\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)),
        rcode=1,
    ),
    "formerr-oversized": Case(raw(tail=b"\x00" * 5000), rcode=1),
    "notimp-notify": Case(raw(flags=4 << 11), rcode=4),
    "notimp-status": Case(raw(flags=2 << 11), rcode=4),
    "drop-short": Case(b"\x12\x34\x01\x00", kind=Drop),
    "drop-empty": Case(b"", kind=Drop),
    "drop-a-response": Case(raw(flags=0x8180), kind=Drop),
    # --- sizes and EDNS0 -----------------------------------------------------------------
    "tc-when-over-udp-size": Case(
        query(f"nobody.{ZONE}"), rcode=3, tc=True, options={"max_udp": 64}
    ),
    "no-tc-over-tcp": Case(
        query(f"nobody.{ZONE}"),
        rcode=3,
        authority=[f"{ZONE}. SOA"],
        options={"max_udp": 64, "transport": "tcp"},
    ),
    "edns-client-size-counts": Case(
        with_opt(query(f"nobody.{ZONE}"), udp=4096),
        rcode=3,
        authority=[f"{ZONE}. SOA"],
        additional=[". OPT"],
        options={"max_udp": 4096},
    ),
    "edns-tiny-size-means-512": Case(
        with_opt(query(f"guest1.{ZONE}"), udp=20),
        answers=["A 198.18.0.3"],
        additional=[". OPT"],
    ),
    "edns-tc-keeps-opt": Case(
        with_opt(query(f"nobody.{ZONE}"), udp=512),
        rcode=3,
        tc=True,
        additional=[". OPT"],
        options={"max_udp": 80},
    ),
    "edns-badvers": Case(with_opt(query(f"guest1.{ZONE}"), version=1), additional=[". OPT"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_answer(case: Case) -> None:
    decision = answer(case.packet, case.zone, **case.options)
    assert type(decision) is case.kind
    if not isinstance(decision, Reply):
        return
    reply = DNSRecord.parse(decision.packet)
    assert reply.header.id == struct.unpack("!H", case.packet[:2])[0]
    assert reply.header.qr == 1
    assert reply.header.rcode == case.rcode
    assert bool(reply.header.tc) == case.tc
    if case.aa is not None:
        assert bool(reply.header.aa) == case.aa
    assert [f"{QTYPE[rr.rtype]} {rr.rdata}" for rr in reply.rr] == case.answers
    assert [f"{rr.rname} {QTYPE[rr.rtype]}" for rr in reply.auth] == case.authority
    assert [f"{rr.rname} {QTYPE[rr.rtype]}" for rr in reply.ar] == case.additional


def test_question_and_flags_are_echoed() -> None:
    packet = query("GuEsT1.GUESTS.Internal", qid=4321)
    reply = reply_to(packet, FORWARDING)
    assert str(reply.q.qname) == "GuEsT1.GUESTS.Internal."  # case kept for 0x20 clients
    assert str(reply.rr[0].rname) == "GuEsT1.GUESTS.Internal."
    assert (reply.header.id, reply.header.rd, reply.header.ra) == (4321, 1, 1)
    assert reply.rr[0].ttl == 60


def test_refused_says_no_recursion_without_upstreams() -> None:
    reply = reply_to(query("example.com"), LOCAL)
    assert reply.header.ra == 0


def test_edns_reply_advertises_our_size_and_copies_do() -> None:
    packet = with_opt(query(f"guest1.{ZONE}"), udp=4096, do=True)
    reply = reply_to(packet, FORWARDING, max_udp=1232)
    opt = reply.ar[0]
    assert (opt.rclass, opt.ttl & 0x8000) == (1232, 0x8000)


def test_badvers_is_carried_in_the_opt_record() -> None:
    packet = with_opt(query(f"guest1.{ZONE}"), version=1)
    reply = reply_to(packet, FORWARDING)
    assert reply.rr == []
    assert reply.ar[0].ttl >> 24 == 1  # BADVERS = 16: header rcode 0, extended rcode 1


def test_forward_carries_the_query_the_limit_and_a_servfail() -> None:
    packet = with_opt(query("example.com", qid=99), udp=1400)
    decision = answer(packet, FORWARDING, max_udp=1232)
    assert isinstance(decision, Forward)
    assert decision.query == packet
    assert decision.limit == 1232
    failure = DNSRecord.parse(decision.failure)
    assert (failure.header.id, failure.header.rcode, str(failure.q.qname)) == (
        99,
        2,
        "example.com.",
    )
    tcp = answer(packet, FORWARDING, transport="tcp")
    assert isinstance(tcp, Forward)
    assert tcp.limit is None


def test_negative_answers_carry_the_ttl_as_soa_minimum() -> None:
    reply = reply_to(query(f"nobody.{ZONE}"), FORWARDING)
    soa = reply.auth[0]
    assert soa.ttl == 60
    assert soa.rdata.times[-1] == 60
