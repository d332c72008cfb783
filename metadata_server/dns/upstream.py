"""Forwards queries for names outside the zone to the admin's upstream resolvers.

Each query goes out under a fresh random id from a fresh UDP socket (so a fresh source
port), and only a packet that answers exactly that query is taken; an answer with TC set
is asked again over TCP. Every exchange has a deadline, and the number of queries in
flight is capped. Upstreams are only the configured IP:port pairs: nothing here looks a
name up, and nothing here decides what to forward (answer.py does).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
from collections.abc import Sequence

from metadata_server.dns.relay import accept, query_id, rcode, truncated, with_id
from metadata_server.dns.settings import Endpoint

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 512
_RCODE_SERVFAIL = 2
_RCODE_REFUSED = 5


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[Endpoint],
        timeout: float,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.upstreams = tuple(upstreams)
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._failing: set[Endpoint] = set()

    async def resolve(self, query: bytes, *, tcp: bool = False) -> bytes | None:
        """The upstreams' answer to `query` under the client's id, or None (→ SERVFAIL).

        Upstreams are asked in order until one answers; SERVFAIL or REFUSED from one
        sends the query on to the next (and is relayed when no other does better).
        `tcp` asks over TCP straight away (the client came over TCP).
        """
        if self._in_flight >= self.max_in_flight:
            log.debug("forward refused: %d queries already in flight", self._in_flight)
            return None
        self._in_flight += 1
        try:
            fallback: bytes | None = None
            for upstream in self.upstreams:
                reply = await self._ask(upstream, query, tcp=tcp)
                if reply is None:
                    continue
                if rcode(reply) in (_RCODE_SERVFAIL, _RCODE_REFUSED):
                    fallback = reply
                    continue
                return reply
            return fallback
        finally:
            self._in_flight -= 1

    async def _ask(self, upstream: Endpoint, query: bytes, *, tcp: bool) -> bytes | None:
        client_id = query_id(query)
        sent = with_id(query, secrets.randbits(16))
        partial: bytes | None = None
        if not tcp:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await _exchange_udp(upstream, sent)
            except (TimeoutError, OSError) as exc:
                self._note_failure(upstream, "UDP", exc)
                return None
            if not truncated(reply):
                self._note_success(upstream)
                return with_id(reply, client_id)
            partial = reply  # relayed as it is if TCP fails: the client can retry itself
        try:
            async with asyncio.timeout(self.timeout):
                reply = await _exchange_tcp(upstream, sent)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._note_failure(upstream, "TCP", exc)
            return with_id(partial, client_id) if partial is not None else None
        self._note_success(upstream)
        return with_id(reply, client_id)

    def _note_failure(self, upstream: Endpoint, transport: str, exc: BaseException) -> None:
        # One warning when an upstream starts failing, not one per query.
        if upstream not in self._failing:
            self._failing.add(upstream)
            log.warning(
                "upstream %s:%s failed over %s: %s",
                upstream[0],
                upstream[1],
                transport,
                type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
            )

    def _note_success(self, upstream: Endpoint) -> None:
        if upstream in self._failing:
            self._failing.discard(upstream)
            log.info("upstream %s:%s answers again", upstream[0], upstream[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _exchange_udp(upstream: Endpoint, sent: bytes) -> bytes:
    """Send once and wait for the matching answer; strays and forgeries are skipped."""
    loop = asyncio.get_running_loop()
    with socket.socket(_family(upstream[0]), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(upstream)  # the kernel then drops datagrams from anyone else
        await loop.sock_sendall(sock, sent)
        while True:
            received = await loop.sock_recv(sock, 65535)
            if accept(sent, received):
                return received


async def _exchange_tcp(upstream: Endpoint, sent: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(upstream[0], upstream[1])
    try:
        writer.write(struct.pack("!H", len(sent)) + sent)
        await writer.drain()
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            received = await reader.readexactly(length)
            if accept(sent, received):
                return received
    finally:
        writer.transport.abort()
