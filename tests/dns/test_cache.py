"""The per-Zone memo of answers: the same bytes as answer(), never older than the Zone."""

from __future__ import annotations

import random

import pytest

from metadata_server.dns.answer import Forward, Reply, Transport, answer
from metadata_server.dns.cache import AnswerCache
from metadata_server.dns.zone import Zone
from metadata_server.model import VM
from metadata_server.store.base import Change
from tests.dns.support import ZONE, dns_settings, make_vm, query

SETTINGS = dns_settings(upstreams=(("127.0.0.1", 5300),))


def zone_of(*vms: VM) -> Zone:
    return Zone.build(vms, SETTINGS, ZONE, serial=1)


QUERIES = {
    "a": query(f"guest1.{ZONE}"),
    "nxdomain": query(f"nobody.{ZONE}"),
    "edns": query(f"guest1.{ZONE}", edns=4096),
    "ptr": query("3.0.18.198.in-addr.arpa", "PTR"),
    "formerr": b"\x12\x34\x00\x00\x00\x02" + b"\x00" * 6,
}


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("packet", QUERIES.values(), ids=QUERIES.keys())
def test_cached_replies_equal_answer(packet: bytes, transport: Transport) -> None:
    zone = zone_of(make_vm(1))
    cache = AnswerCache()
    for qid in (1, 2, 0xFFFF):
        asked = qid.to_bytes(2, "big") + packet[2:]
        expected = answer(asked, zone, max_udp=1232, transport=transport)
        assert cache.answer(asked, zone, max_udp=1232, transport=transport) == expected
    assert (cache.misses, cache.hits) == (1, 2)


def test_a_new_zone_forgets_everything() -> None:
    vm = make_vm(1)
    zone = zone_of(vm)
    cache = AnswerCache()
    packet = query(f"guest1.{ZONE}")
    first = cache.answer(packet, zone, max_udp=1232, transport="udp")
    after = zone.with_changes([Change("deleted", vm.mac, None)])
    second = cache.answer(packet, after, max_udp=1232, transport="udp")
    assert isinstance(first, Reply) and isinstance(second, Reply)
    assert first.packet != second.packet
    assert second == answer(packet, after)


def test_forwards_are_not_kept() -> None:
    cache = AnswerCache()
    zone = zone_of()
    for _ in range(2):
        assert isinstance(
            cache.answer(query("example.com"), zone, max_udp=1232, transport="udp"), Forward
        )
    assert len(cache) == 0


def test_the_memo_is_bounded() -> None:
    cache = AnswerCache(max_entries=100)
    zone = zone_of()
    rng = random.Random(1)
    for _ in range(1000):
        cache.answer(query(f"n{rng.random()}.{ZONE}"), zone, max_udp=1232, transport="udp")
        assert len(cache) <= 100
