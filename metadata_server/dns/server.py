"""The DNS endpoints: a UDP socket and a TCP listener on every configured address.

Each datagram or TCP message goes to `answer()` with the current Zone (through the
per-Zone AnswerCache); a Forward goes to the Forwarder, and the upstream's answer is
fitted to the client's size. This module only moves bytes: it decides nothing about DNS
itself. TCP connections are capped per client address (and in all) and closed when idle
or slow; oversized or undersized TCP lengths close the connection. Nothing a client sends
may stop or stall the other clients.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

from metadata_server.dns.answer import (
    DEFAULT_MAX_UDP,
    HEADER_LEN,
    MAX_QUERY_BYTES,
    Decision,
    Drop,
    Forward,
    Reply,
    Transport,
)
from metadata_server.dns.cache import AnswerCache
from metadata_server.dns.relay import fit
from metadata_server.dns.settings import DnsSettings, Endpoint
from metadata_server.dns.upstream import Forwarder
from metadata_server.dns.zone import Zone
from metadata_server.errors import ConfigError

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 20  # port 0: find a port free for both UDP and TCP
_TCP_BACKLOG = 128


class DnsServer:
    """UDP and TCP endpoints for `settings.listen`, answering from `zone()`."""

    def __init__(
        self,
        settings: DnsSettings,
        zone: Callable[[], Zone],
        forwarder: Forwarder | None,
        *,
        max_udp: int = DEFAULT_MAX_UDP,
    ) -> None:
        self.settings = settings
        self._zone = zone
        self._forwarder = forwarder
        self._max_udp = max_udp
        self._cache = AnswerCache()
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections = 0
        self._per_client: dict[str, int] = {}
        self.addresses: list[Endpoint] = []

    async def start(self) -> None:
        """Bind every address (UDP and TCP on the same port); ConfigError when one fails."""
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.settings.listen:
                udp_sock, tcp_sock = _bind_pair(host, port)
                bound_host, bound_port = udp_sock.getsockname()[:2]
                try:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), sock=udp_sock
                    )
                except BaseException:
                    udp_sock.close()
                    tcp_sock.close()
                    raise
                self._udp.append(transport)
                try:
                    server = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
                except BaseException:
                    tcp_sock.close()
                    raise
                self._tcp.append(server)
                self.addresses.append((bound_host, bound_port))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._tcp:
            await server.wait_closed()
        self._udp.clear()
        self._tcp.clear()
        self.addresses.clear()

    # --- shared -------------------------------------------------------------------------

    def _decide(self, data: bytes, transport: Transport, peer: object) -> Decision:
        try:
            decision = self._cache.answer(
                data, self._zone(), max_udp=self._max_udp, transport=transport
            )
        except Exception:  # answer() must not raise; if it does, drop rather than die
            log.exception("DNS answer failed for a query from %s", peer)
            return Drop("internal error")
        if isinstance(decision, Drop):
            log.debug("dropped a %s query from %s: %s", transport, peer, decision.reason)
        return decision

    async def _forwarded(self, decision: Forward, *, tcp: bool) -> bytes:
        if self._forwarder is None:
            return decision.failure
        reply = await self._forwarder.resolve(decision.query, tcp=tcp)
        return fit(reply, decision.limit) if reply is not None else decision.failure

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- UDP ----------------------------------------------------------------------------

    def datagram(self, transport: asyncio.DatagramTransport, data: bytes, peer: Any) -> None:
        decision = self._decide(data, "udp", peer)
        if isinstance(decision, Reply):
            transport.sendto(decision.packet, peer)
        elif isinstance(decision, Forward):
            self._track(asyncio.ensure_future(self._forward_udp(transport, decision, peer)))

    async def _forward_udp(
        self, transport: asyncio.DatagramTransport, decision: Forward, peer: Any
    ) -> None:
        packet = await self._forwarded(decision, tcp=False)
        if not transport.is_closing():
            transport.sendto(packet, peer)

    # --- TCP ----------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        from_client = self._per_client.get(client, 0)
        if (
            self._connections >= self.settings.max_tcp_connections
            or from_client >= self.settings.max_tcp_per_client
        ):
            log.debug("TCP connection from %s refused: at the cap", peer)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._track(task)
        self._connections += 1
        self._per_client[client] = from_client + 1
        idle = self.settings.tcp_idle_timeout
        clean = False
        try:
            while True:
                async with asyncio.timeout(idle):
                    try:
                        prefix = await reader.readexactly(2)
                    except asyncio.IncompleteReadError as exc:
                        clean = not exc.partial  # the client closed between messages
                        return
                    (length,) = struct.unpack("!H", prefix)
                    if not HEADER_LEN <= length <= MAX_QUERY_BYTES:
                        log.debug("closing TCP from %s: message length %d", peer, length)
                        return
                    data = await reader.readexactly(length)
                decision = self._decide(data, "tcp", peer)
                if isinstance(decision, Drop):
                    return
                if isinstance(decision, Reply):
                    packet = decision.packet
                else:
                    packet = await self._forwarded(decision, tcp=True)
                writer.write(struct.pack("!H", len(packet)) + packet)
                async with asyncio.timeout(idle):
                    await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("closing TCP from %s: %s", peer, type(exc).__name__)
        except asyncio.CancelledError:
            # Only stop() cancels this task. Ending normally keeps asyncio's stream
            # callback (3.11) from reporting the cancellation as an error.
            pass
        finally:
            self._connections -= 1
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left
            if clean:
                writer.close()
            else:
                writer.transport.abort()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.server.datagram(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (a client that went away): nothing to do.
        log.debug("DNS UDP socket error: %s", exc)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on the same host and port."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    attempts = _PORT_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((host, port))
            bound_port = udp.getsockname()[1]
            try:
                tcp.bind((host, bound_port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    udp.close()
                    tcp.close()
                    continue  # port 0 gave a UDP port whose TCP twin is taken: try again
                raise
            tcp.listen(_TCP_BACKLOG)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            raise ConfigError(
                f"dns.listen: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
    raise AssertionError("unreachable")
