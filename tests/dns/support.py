"""DNS test helpers: records, queries, clients over real sockets, and a stub upstream.

`StubUpstream` stands in for the admin's upstream resolver (the real one is on a
network the tests must not reach): a tiny dnslib server on 127.0.0.1 that can answer,
stay silent, or answer truncated over UDP.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from typing import Any, cast

from dnslib import EDNS0, QTYPE, RR, TXT, A, DNSRecord

from metadata_server.dns.settings import DnsSettings
from metadata_server.model import VM, State, parse_vm

ZONE = "guests.internal"
UPSTREAM_ADDRESS = "198.18.99.1"  # what the stub answers for any A question
BIG_PREFIX = "big."  # names the stub answers with ~2 kB of TXT


def make_vm(n: int, **overrides: Any) -> VM:
    body: dict[str, Any] = {
        "mac": f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}",
        "hostname": f"guest{n}",
        "ipv4": {"address": f"198.18.{n // 250}.{n % 250 + 2}", "prefix": 16},
    }
    body.update(overrides)
    spec = parse_vm(body).spec
    return VM(spec, f"instance-{n}", State.REGISTERED, {}, None, 0.0, 0.0)


def dns_settings(**overrides: Any) -> DnsSettings:
    values: dict[str, Any] = {
        "listen": (("127.0.0.1", 0),),
        "zone": ZONE,
        "upstream_timeout": 0.5,
        "tcp_idle_timeout": 1.0,
    }
    values.update(overrides)
    return DnsSettings(**values)


def query(name: str, qtype: str = "A", *, qid: int = 0x1234, edns: int | None = None) -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns))
    packet = bytes(record.pack())
    return packet


async def udp_exchange(address: tuple[str, int], packet: bytes, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        await loop.sock_sendall(sock, packet)
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(sock, 65535)


async def tcp_exchange(
    address: tuple[str, int], packet: bytes, timeout: float = 3.0, source: str | None = None
) -> bytes:
    async with asyncio.timeout(timeout):
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(*address, local_addr=local)
        try:
            writer.write(struct.pack("!H", len(packet)) + packet)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()


def parse(packet: bytes) -> Any:
    return DNSRecord.parse(packet)


def bind_pair() -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on one free port of 127.0.0.1."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError as exc:
            udp.close()
            tcp.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise RuntimeError("no free port pair")


class StubUpstream:
    """An upstream resolver on 127.0.0.1. mode: answer | silent | truncate-udp."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.queries: list[tuple[str, str, int]] = []  # (transport, name, qid)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.endpoint: tuple[str, int] = ("127.0.0.1", 0)

    def reply(self, packet: bytes, transport: str) -> bytes | None:
        request = DNSRecord.parse(packet)
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append((transport, name, request.header.id))
        if self.mode == "silent" and transport == "udp":
            return None
        response = request.reply()
        if self.mode == "truncate-udp" and transport == "udp":
            response.header.tc = 1
            return bytes(response.pack())
        if name.startswith(BIG_PREFIX):
            for i in range(10):
                response.add_answer(
                    RR(request.q.qname, QTYPE.TXT, ttl=30, rdata=TXT(f"{i:02d}" + "x" * 198))
                )
        elif request.q.qtype == QTYPE.A:
            response.add_answer(RR(request.q.qname, QTYPE.A, ttl=30, rdata=A(UPSTREAM_ADDRESS)))
        return bytes(response.pack())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp_sock, tcp_sock = bind_pair()
        self.endpoint = ("127.0.0.1", udp_sock.getsockname()[1])
        stub = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: Any) -> None:
                out = stub.reply(data, "udp")
                if out is not None:
                    self.transport.sendto(out, addr)

        self._udp, _ = await loop.create_datagram_endpoint(Protocol, sock=udp_sock)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    out = stub.reply(await reader.readexactly(length), "tcp")
                    if out is not None:
                        writer.write(struct.pack("!H", len(out)) + out)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._tcp = await asyncio.start_server(serve, sock=tcp_sock)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
