"""The responder on real sockets: UDP and TCP, forwarding, truncation, and TCP limits."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import pytest
from dnslib import QTYPE

from metadata_server.dns.service import DnsService
from metadata_server.errors import ConfigError
from metadata_server.registry import Registry
from metadata_server.store import Store
from tests.dns.conftest import StartResponder, StartUpstream
from tests.dns.support import (
    UPSTREAM_ADDRESS,
    ZONE,
    dns_settings,
    parse,
    query,
    tcp_exchange,
    udp_exchange,
)
from tests.support.records import guest_body, mac_of

Exchange = Callable[[tuple[str, int], bytes], Awaitable[bytes]]
EXCHANGES: dict[str, Exchange] = {"udp": udp_exchange, "tcp": tcp_exchange}


@pytest.mark.parametrize("exchange", EXCHANGES.values(), ids=EXCHANGES.keys())
async def test_guest_by_name_and_address(
    exchange: Exchange, registry: Registry, start_responder: StartResponder
) -> None:
    await registry.put(mac_of(1), guest_body(1))  # guest1 at 198.18.0.11, default domain
    dns = await start_responder()
    address = dns.addresses[0]
    reply = parse(await exchange(address, query(f"guest1.{ZONE}", qid=77)))
    assert reply.header.id == 77
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.11"]
    reply = parse(await exchange(address, query("11.0.18.198.in-addr.arpa", "PTR")))
    assert [str(rr.rdata) for rr in reply.rr] == [f"guest1.{ZONE}."]
    reply = parse(await exchange(address, query(f"nobody.{ZONE}")))
    assert reply.header.rcode == 3


async def test_registry_changes_show_at_once(
    registry: Registry, start_responder: StartResponder
) -> None:
    dns = await start_responder()
    address = dns.addresses[0]
    assert parse(await udp_exchange(address, query(f"guest5.{ZONE}"))).header.rcode == 3
    await registry.put(mac_of(5), guest_body(5))
    reply = parse(await udp_exchange(address, query(f"guest5.{ZONE}")))
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.15"]
    await registry.patch(mac_of(5), {"hostname": "web", "ipv4": {"address": "198.18.0.99"}})
    assert parse(await udp_exchange(address, query(f"guest5.{ZONE}"))).header.rcode == 3
    reply = parse(await udp_exchange(address, query("99.0.18.198.in-addr.arpa", "PTR")))
    assert [str(rr.rdata) for rr in reply.rr] == [f"web.{ZONE}."]
    await registry.delete(mac_of(5))
    assert parse(await udp_exchange(address, query(f"web.{ZONE}"))).header.rcode == 3


async def test_refused_without_upstreams(start_responder: StartResponder) -> None:
    dns = await start_responder()
    reply = parse(await udp_exchange(dns.addresses[0], query("example.com")))
    assert reply.header.rcode == 5


@pytest.mark.parametrize("exchange", EXCHANGES.values(), ids=EXCHANGES.keys())
async def test_forwarding(
    exchange: Exchange, start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("answer")
    dns = await start_responder(upstreams=(stub.endpoint,))
    reply = parse(await exchange(dns.addresses[0], query("www.example.com", qid=4242)))
    assert reply.header.id == 4242
    assert reply.header.rcode == 0
    assert [str(rr.rdata) for rr in reply.rr] == [UPSTREAM_ADDRESS]
    assert len(stub.queries) == 1
    assert stub.queries[0][1] == "www.example.com"
    # Reverse names that are not a guest's go upstream too.
    reply = parse(await exchange(dns.addresses[0], query("7.7.18.198.in-addr.arpa", "PTR")))
    assert reply.header.rcode == 0
    assert stub.queries[-1][1] == "7.7.18.198.in-addr.arpa"


async def test_upstream_sees_a_fresh_id(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("answer")
    dns = await start_responder(upstreams=(stub.endpoint,))
    for _ in range(8):
        await udp_exchange(dns.addresses[0], query("www.example.com", qid=1))
    ids = {qid for _, _, qid in stub.queries}
    assert len(ids) > 1  # random ids, not the client's id passed through


async def test_truncated_over_udp_then_full_over_tcp(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("answer")  # answers ~2 kB of TXT for big.*
    dns = await start_responder(upstreams=(stub.endpoint,))
    packet = query("big.example.com", "TXT")
    small = await udp_exchange(dns.addresses[0], packet)
    assert len(small) <= 512
    reply = parse(small)
    assert (reply.header.tc, len(reply.rr), str(reply.q.qname)) == (1, 0, "big.example.com.")
    full = parse(await tcp_exchange(dns.addresses[0], packet))
    assert (full.header.tc, len(full.rr)) == (0, 10)
    # With EDNS0 and a big enough buffer the full answer comes over UDP.
    # With EDNS0 the client may take more, but never more than our 1232 bytes: ~2 kB
    # still comes truncated.
    packet = query("big.example.com", "TXT", edns=4096)
    capped = await udp_exchange(dns.addresses[0], packet)
    assert len(capped) <= 1232
    assert parse(capped).header.tc == 1


async def test_servfail_when_the_upstream_is_silent(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("silent")
    dns = await start_responder(upstreams=(stub.endpoint,), upstream_timeout=0.3)
    started = time.monotonic()
    reply = parse(await udp_exchange(dns.addresses[0], query("www.example.com", qid=9)))
    assert (reply.header.id, reply.header.rcode) == (9, 2)
    assert 0.25 < time.monotonic() - started < 2.0


async def test_next_upstream_when_the_first_is_silent(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    silent = await start_upstream("silent")
    good = await start_upstream("answer")
    dns = await start_responder(upstreams=(silent.endpoint, good.endpoint), upstream_timeout=0.3)
    reply = parse(await udp_exchange(dns.addresses[0], query("www.example.com")))
    assert [str(rr.rdata) for rr in reply.rr] == [UPSTREAM_ADDRESS]


async def test_tcp_retry_when_the_upstream_truncates(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("truncate-udp")
    dns = await start_responder(upstreams=(stub.endpoint,))
    reply = parse(await udp_exchange(dns.addresses[0], query("www.example.com")))
    assert (reply.header.tc, [str(rr.rdata) for rr in reply.rr]) == (0, [UPSTREAM_ADDRESS])
    assert [transport for transport, _, _ in stub.queries] == ["udp", "tcp"]


async def test_tcp_pipelined_queries(registry: Registry, start_responder: StartResponder) -> None:
    await registry.put(mac_of(1), guest_body(1))
    dns = await start_responder()
    reader, writer = await asyncio.open_connection(*dns.addresses[0])
    try:
        for qid in (1, 2, 3):
            packet = query(f"guest1.{ZONE}", qid=qid)
            writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        for qid in (1, 2, 3):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = parse(await reader.readexactly(length))
            assert (reply.header.id, reply.rr[0].rtype) == (qid, QTYPE.A)
    finally:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_tcp_idle_connections_are_closed(start_responder: StartResponder) -> None:
    dns = await start_responder(tcp_idle_timeout=0.3)
    reader, writer = await asyncio.open_connection(*dns.addresses[0])
    writer.write(b"\x00")  # half a length prefix, then nothing
    await writer.drain()
    assert await _closed_by_server(reader, within=2.0)
    writer.close()


@pytest.mark.parametrize("length", [0, 5, 65535], ids=["zero", "under-header", "oversized"])
async def test_tcp_bad_lengths_close_the_connection(
    length: int, start_responder: StartResponder
) -> None:
    dns = await start_responder()
    reader, writer = await asyncio.open_connection(*dns.addresses[0])
    writer.write(struct.pack("!H", length) + b"\x00" * min(length, 100))
    await writer.drain()
    assert await _closed_by_server(reader, within=0.5)
    writer.close()


async def test_tcp_connection_cap_and_stalled_clients_stall_nobody(
    registry: Registry, start_responder: StartResponder
) -> None:
    await registry.put(mac_of(1), guest_body(1))
    dns = await start_responder(max_tcp_per_client=2, tcp_idle_timeout=5.0)
    address = dns.addresses[0]
    stalled = [await asyncio.open_connection(*address) for _ in range(2)]
    for _, writer in stalled:
        writer.write(b"\x00\x40\x12")  # a length and a bit of a message, then silence
        await writer.drain()
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection(*address)
    assert await _closed_by_server(reader, within=1.0)  # over its cap: closed at once
    writer.close()
    reply = parse(await udp_exchange(address, query(f"guest1.{ZONE}"), timeout=1.0))
    assert reply.rr  # UDP goes on regardless
    other = await tcp_exchange(address, query(f"guest1.{ZONE}"), timeout=1.0, source="127.0.0.2")
    assert parse(other).rr  # another client's TCP too: the cap is per client
    for _, writer in stalled:
        writer.close()
    await asyncio.sleep(0.05)
    reply = parse(await tcp_exchange(address, query(f"guest1.{ZONE}"), timeout=1.0))
    assert reply.rr  # the slots are free again


async def test_responses_are_never_answered(start_responder: StartResponder) -> None:
    dns = await start_responder()
    packet = bytearray(query(f"guest1.{ZONE}"))
    packet[2] |= 0x80
    with pytest.raises(TimeoutError):
        await udp_exchange(dns.addresses[0], bytes(packet), timeout=0.3)


async def test_several_listen_addresses_and_stop_frees_them(
    registry: Registry, start_responder: StartResponder
) -> None:
    await registry.put(mac_of(1), guest_body(1))
    dns = await start_responder(listen=(("127.0.0.1", 0), ("127.0.0.1", 0)))
    assert len(dns.addresses) == 2
    assert dns.addresses[0] != dns.addresses[1]
    for address in dns.addresses:
        assert parse(await udp_exchange(address, query(f"guest1.{ZONE}"))).rr
        assert parse(await tcp_exchange(address, query(f"guest1.{ZONE}"))).rr
    ports = [port for _, port in dns.addresses]
    await dns.stop()
    assert not dns.addresses
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", port))


async def test_stop_with_a_forward_in_flight(
    start_responder: StartResponder, start_upstream: StartUpstream
) -> None:
    stub = await start_upstream("silent")
    dns = await start_responder(upstreams=(stub.endpoint,), upstream_timeout=5.0)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(dns.addresses[0])
        await loop.sock_sendall(sock, query("www.example.com"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await dns.stop()
        assert time.monotonic() - started < 1.0


async def test_a_taken_port_is_a_config_error(store: Store) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        dns = DnsService(dns_settings(listen=(("127.0.0.1", 0), ("127.0.0.1", port))), store, ZONE)
        with pytest.raises(ConfigError, match=f"dns.listen: cannot listen on 127.0.0.1:{port}"):
            await dns.start()
        assert not dns.addresses  # the first address, bound before the failure, is let go
