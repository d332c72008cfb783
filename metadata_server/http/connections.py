"""The guest listener's connections: limits that hold before aiohttp parses anything.

One guest must not hurt the others, so every TCP connection on the guest listener passes
through `GuardedConnection`, a thin protocol in front of aiohttp's request handler:

- past `per_source` open connections from one address, a new one gets a 503 and is
  closed before it is read (trusted proxies, which carry many guests, are exempt);
- each request head is measured as its bytes arrive: past `max_header_bytes` or
  `max_header_lines` the connection gets a 431 and is closed, before aiohttp parses it;
- each request has `request_timeout` seconds from its first byte to its last (head and
  body): a slow sender (slowloris) gets a 408 and is closed;
- a body must be announced by `Content-Length` and stay under `max_body_bytes` (guest
  requests are small): a chunked body gets a 411, a larger one a 413.

An idle connection is closed by aiohttp's keep-alive timeout (`idle_timeout`). The
scanner only finds where heads end and how long bodies are, to count; aiohttp parses and
judges every request itself. Each connection also carries its `ConnectionProof` (what it
has shown about its peer, see identity.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from metadata_server.identity import ConnectionProof

log = logging.getLogger(__name__)
HEAD_END = b"\r\n\r\n"
LOG_EVERY = 60.0  # seconds: one line per address and kind of refusal
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    per_source: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_header_bytes: int = 16 * 1024
    max_header_lines: int = 64
    max_body_bytes: int = 64 * 1024


def _reply(status: int, reason: str, text: str) -> bytes:
    body = text.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


TOO_MANY = _reply(503, "Service Unavailable", "too many connections from this address")
TOO_LARGE = _reply(431, "Request Header Fields Too Large", "the request head is too large")
TOO_SLOW = _reply(408, "Request Timeout", "the request took too long to arrive")
NO_LENGTH = _reply(411, "Length Required", "a request body needs a Content-Length")
BODY_TOO_LARGE = _reply(413, "Payload Too Large", "the request body is too large")


def _content_length(head: bytes) -> int | None:
    """The body length a head announces: 0 without one, None for a chunked body. Several
    differing lengths count as the largest; aiohttp refuses such a request anyway."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            text = value.strip()
            # bytes.isdigit() is ASCII only
            length = max(length, int(text)) if text.isdigit() and len(text) < 16 else 2**62
    return length


class ConnectionCounter:
    """Open connections per source address, shared by every connection of a listener,
    and a log that says each kind of refusal once a minute per address."""

    def __init__(self, limits: ConnectionLimits, exempt: Callable[[str], bool]) -> None:
        self.limits = limits
        self.exempt = exempt
        self.open: dict[str, int] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self.refused: dict[str, int] = {}

    def admit(self, source: str) -> bool:
        count = self.open.get(source, 0)
        if count >= self.limits.per_source and not self.exempt(source):
            return False
        self.open[source] = count + 1
        return True

    def release(self, source: str) -> None:
        count = self.open.get(source, 0) - 1
        if count > 0:
            self.open[source] = count
        else:
            self.open.pop(source, None)

    def note_refusal(self, source: str, kind: str) -> None:
        self.refused[kind] = self.refused.get(kind, 0) + 1
        now = time.monotonic()
        key = (source, kind)
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            if len(self._logged) > 4096:
                self._logged.clear()
            self._logged[key] = now
            log.warning("guest listener: %s from %s (said once a minute)", kind, source)


class GuardedConnection(asyncio.Protocol):
    """One TCP connection: the limits above, then aiohttp's handler for everything."""

    def __init__(self, inner: Any, counter: ConnectionCounter) -> None:
        self._inner = inner
        self._counter = counter
        self._limits = counter.limits
        self._transport: asyncio.Transport | None = None
        self._source = ""
        self._admitted = False  # counted among its source's connections
        self._inner_alive = False  # aiohttp's handler has the connection
        self._closed = False
        self._head = bytearray()
        self._in_head = False
        self._body_left = 0
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = 0
        self.proof = ConnectionProof(time.monotonic())

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]).removeprefix("::ffff:") if peer else ""
        if not self._counter.admit(self._source):
            self._refuse(TOO_MANY, "too many connections")
            return
        self._admitted = self._inner_alive = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            self._lingering -= len(data)
            if self._lingering < 0 and self._transport is not None:
                self._transport.close()
            return
        if self._scan(data):
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self._inner_alive:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_timer()
        if self._admitted:
            self._admitted = False
            self._counter.release(self._source)
            self._end_inner(exc)

    def pause_writing(self) -> None:
        if self._inner_alive:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner_alive:
            self._inner.resume_writing()

    def _end_inner(self, exc: Exception | None) -> None:
        if self._inner_alive:
            self._inner_alive = False
            self._inner.connection_lost(exc)

    # --- the limits -----------------------------------------------------------------

    def _scan(self, data: bytes) -> bool:
        """Follow heads and bodies through `data`; False when the connection was refused."""
        position, size = 0, len(data)
        limits = self._limits
        while position < size:
            if self._body_left:
                taken = min(self._body_left, size - position)
                self._body_left -= taken
                position += taken
                if not self._body_left:
                    self._stop_timer()
                continue
            if not self._in_head:
                self._in_head = True
                self._head.clear()
                self._timer = asyncio.get_running_loop().call_later(
                    limits.request_timeout, self._timed_out
                )
            end = self._head_end(data, position)
            if end < 0:
                self._head += data[position : position + limits.max_header_bytes + 1]
                if len(self._head) > limits.max_header_bytes or (
                    self._head.count(b"\n") > limits.max_header_lines + 1
                ):
                    return self._refuse(TOO_LARGE, "request head too large")
                return True
            self._head += data[position:end]
            head = bytes(self._head)
            if (
                len(head) > limits.max_header_bytes
                or head.count(b"\n") > limits.max_header_lines + 1
            ):
                return self._refuse(TOO_LARGE, "request head too large")
            position = end
            self._in_head = False
            length = _content_length(head)
            if length is None:
                return self._refuse(NO_LENGTH, "chunked request body")
            if length > limits.max_body_bytes:
                return self._refuse(BODY_TOO_LARGE, "request body too large")
            self._body_left = length
            if not length:
                self._stop_timer()
        return True

    def _head_end(self, data: bytes, position: int) -> int:
        """Where in `data` the current head ends (just past its blank line), or -1. The
        blank line may have begun in the bytes already kept."""
        if self._head:
            kept = bytes(self._head[-3:])
            straddle = (kept + data[position : position + 3]).find(HEAD_END)
            if 0 <= straddle < len(kept):
                return position + straddle + len(HEAD_END) - len(kept)
        found = data.find(HEAD_END, position)
        return found + len(HEAD_END) if found >= 0 else -1

    def _timed_out(self) -> None:
        self._timer = None
        if not self._closed and (self._in_head or self._body_left):
            self._refuse(TOO_SLOW, "request too slow")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, reply: bytes, kind: str) -> bool:
        """Answer `reply` and close. A connection refused at once is closed at once (it
        holds a file descriptor); one refused mid-request is read and dropped for a
        moment first (up to LINGER_BYTES, and it stays counted against its source):
        closing with unread data resets the connection, and the client would lose the
        answer."""
        self._counter.note_refusal(self._source, kind)
        self._closed = True
        self._stop_timer()
        transport = self._transport
        assert transport is not None
        transport.write(reply)
        if not self._admitted:
            transport.close()
            return False
        self._lingering = LINGER_BYTES
        self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)
        return False


class GuardedTCPSite(web.BaseSite):
    """A TCP listener whose connections pass through `GuardedConnection`."""

    __slots__ = ("_counter", "_host", "_port", "bound")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, counter: ConnectionCounter
    ) -> None:
        super().__init__(runner, backlog=1024)
        self._host = host
        self._port = port
        self._counter = counter
        self.bound: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.bound[1] if self.bound else self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        counter = self._counter

        def connection() -> GuardedConnection:
            return GuardedConnection(server(), counter)

        loop = asyncio.get_running_loop()
        listening = await loop.create_server(
            connection, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        self._server = listening
        self.bound = listening.sockets[0].getsockname()[:2]


def proof_of(request: web.Request) -> ConnectionProof | None:
    """The connection's proof of its peer, when it came through a guarded listener."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol.proof if isinstance(protocol, GuardedConnection) else None
