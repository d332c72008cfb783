"""Garbage in, no harm done: random and mutated packets against the pure core and a live
responder, which must still answer a normal query afterwards (and log no errors)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct

import pytest
from dnslib import DNSRecord

from metadata_server.dns.answer import Drop, Forward, Reply, Transport, answer
from metadata_server.dns.zone import Zone
from metadata_server.registry import Registry
from tests.dns.conftest import StartResponder, StartUpstream
from tests.dns.support import ZONE, dns_settings, make_vm, parse, query, tcp_exchange, udp_exchange
from tests.support.records import guest_body, mac_of

SEED = 20261126


def corpus() -> list[bytes]:
    packets = [
        query(f"guest1.{ZONE}"),
        query(f"nobody.{ZONE}", "AAAA"),
        query(ZONE, "SOA", edns=1232),
        query("11.0.18.198.in-addr.arpa", "PTR"),
        query("www.example.com", "TXT", edns=4096),
        query(ZONE, "ANY"),
    ]
    record = DNSRecord.parse(query(f"a.b.c.guest1.{ZONE}", "MX"))
    packets.append(bytes(record.pack()))
    return packets


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(0, 600))
    packet = bytearray(rng.choice(seeds))
    if choice == 1:  # flip a few bytes
        for _ in range(rng.randrange(1, 6)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
    elif choice == 2:  # cut short
        del packet[rng.randrange(len(packet)) :]
    elif choice == 3:  # bogus counts
        struct.pack_into("!4H", packet, 4, *(rng.choice([0, 1, 2, 255, 65535]) for _ in range(4)))
    elif choice == 4:  # compression pointers anywhere, including at themselves
        at = rng.randrange(12, len(packet))
        packet[at : at + 2] = struct.pack("!H", 0xC000 | rng.randrange(0, len(packet) + 4))
    elif choice == 5:  # junk appended or inserted
        at = rng.randrange(len(packet) + 1)
        packet[at:at] = rng.randbytes(rng.randrange(1, 300))
    elif choice == 6:  # odd flags: opcodes, QR, Z bits
        struct.pack_into("!H", packet, 2, rng.randrange(65536))
    else:  # odd type and class
        struct.pack_into("!HH", packet, len(packet) - 4, rng.randrange(65536), rng.randrange(65536))
    return bytes(packet)


def test_answer_never_raises() -> None:
    rng = random.Random(SEED)
    seeds = corpus()
    zone = Zone.build(
        [make_vm(n) for n in range(1, 50)],
        dns_settings(upstreams=(("127.0.0.1", 5300),)),
        ZONE,
        serial=1,
    )
    kinds = {Reply: 0, Forward: 0, Drop: 0}
    for _ in range(30000):
        packet = mutate(rng, seeds)
        transport: Transport = "tcp" if rng.random() < 0.2 else "udp"
        decision = answer(packet, zone, max_udp=rng.choice([512, 1232]), transport=transport)
        kinds[type(decision)] += 1
        if isinstance(decision, Reply):
            assert len(decision.packet) >= 12
            if transport == "udp":
                assert len(decision.packet) <= 1232
    assert all(kinds.values()), kinds  # the mutations reach every kind of decision


async def test_live_responder_survives_garbage(
    caplog: pytest.LogCaptureFixture,
    registry: Registry,
    start_responder: StartResponder,
    start_upstream: StartUpstream,
) -> None:
    caplog.set_level(logging.ERROR, logger="metadata_server.dns")
    await registry.put(mac_of(1), guest_body(1))
    stub = await start_upstream("answer")
    dns = await start_responder(
        upstreams=(stub.endpoint,), tcp_idle_timeout=0.5, max_tcp_connections=20
    )
    address = dns.addresses[0]
    rng = random.Random(SEED + 1)
    seeds = corpus()

    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        for _ in range(300):
            for _ in range(100):
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.send(mutate(rng, seeds))
            # Count what comes back until the responder has gone quiet: its speed (a
            # loaded machine) decides how long that takes, not how many are answered.
            quiet_since = asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() - quiet_since < 0.03:
                try:
                    sock.recv(65535)
                    replies += 1
                    quiet_since = asyncio.get_running_loop().time()
                except (BlockingIOError, ConnectionRefusedError):
                    await asyncio.sleep(0.002)
    assert replies > 10000  # most garbage is answered (FORMERR and friends), not lost

    async def bogus_tcp(i: int) -> None:
        try:
            _reader, writer = await asyncio.open_connection(*address)
        except OSError:
            return
        try:
            kind = i % 4
            if kind == 0:  # a huge length, a little data, then gone
                writer.write(struct.pack("!H", rng.randrange(4097, 65536)) + rng.randbytes(50))
            elif kind == 1:  # a fitting length with garbage inside
                body = mutate(rng, seeds)[:4096] or b"\x00" * 12
                writer.write(struct.pack("!H", len(body)) + body)
            elif kind == 2:  # a length promising more than ever comes
                writer.write(struct.pack("!H", 300) + rng.randbytes(20))
            else:  # one byte and silence until the idle timeout
                writer.write(b"\x01")
            await writer.drain()
            await asyncio.sleep(rng.random() * 0.3)
        except OSError:
            pass
        finally:
            writer.close()

    await asyncio.gather(*(bogus_tcp(i) for i in range(400)))

    reply = parse(await udp_exchange(address, query(f"guest1.{ZONE}"), timeout=2.0))
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.11"]
    reply = parse(await tcp_exchange(address, query(f"guest1.{ZONE}"), timeout=2.0))
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.11"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
