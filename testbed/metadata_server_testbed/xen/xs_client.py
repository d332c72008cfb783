"""A minimal xenstore wire-protocol client, for controlling the stand-in xenstored.

The service itself talks to xenstore only through the real xenstore-utils (see
`xenstore_tools`); this client exists for what those tools cannot send: CONTROL
requests (introduce and release a domain on the stand-in) and protocol-level checks
(the exact error name a request gets). One request at a time; watch events are queued.
It must not grow into a second xenstore library for the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from metadata_server_testbed.xen.xs_wire import (
    HEADER_SIZE,
    PAYLOAD_MAX,
    MsgType,
    XsError,
    frame,
    join_strings,
    parse_header,
    strings,
)

DEFAULT_TIMEOUT = 10.0


class XsClient:
    """One connection to a xenstored socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._req_id = 0
        self._replies: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT
    ) -> XsClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(os.fspath(path)), timeout
        )
        return cls(reader, writer, timeout)

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        try:
            while True:
                header = parse_header(await self._reader.readexactly(HEADER_SIZE))
                if header.length > PAYLOAD_MAX:
                    break
                payload = await self._reader.readexactly(header.length)
                if header.type == MsgType.WATCH_EVENT:
                    path, token = (part.decode() for part in strings(payload)[:2])
                    await self.events.put((path, token))
                else:
                    await self._replies.put((header.type, header.req_id, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        await self._replies.put((-1, 0, b""))  # wakes a waiting request: connection closed

    async def request(self, kind: int, payload: bytes, tx_id: int = 0) -> bytes:
        """Send one request and return the reply payload; XsError for an error reply,
        ConnectionError when the server closed the connection."""
        async with self._lock:
            self._req_id += 1
            self._writer.write(frame(kind, self._req_id, tx_id, payload))
            await self._writer.drain()
            reply_type, _, body = await asyncio.wait_for(self._replies.get(), self._timeout)
        if reply_type == -1:
            await self._replies.put((-1, 0, b""))
            raise ConnectionError("xenstored closed the connection")
        if reply_type == MsgType.ERROR:
            raise XsError(body.rstrip(b"\0").decode("ascii", "replace"))
        return body

    async def read(self, path: str, tx_id: int = 0) -> bytes:
        return await self.request(MsgType.READ, path.encode() + b"\0", tx_id)

    async def write(self, path: str, value: bytes, tx_id: int = 0) -> None:
        await self.request(MsgType.WRITE, path.encode() + b"\0" + value, tx_id)

    async def directory(self, path: str, tx_id: int = 0) -> list[str]:
        body = await self.request(MsgType.DIRECTORY, path.encode() + b"\0", tx_id)
        return [name.decode() for name in strings(body)]

    async def get_perms(self, path: str) -> list[str]:
        body = await self.request(MsgType.GET_PERMS, path.encode() + b"\0")
        return [perm.decode() for perm in strings(body)]

    async def set_perms(self, path: str, *perms: str) -> None:
        await self.request(
            MsgType.SET_PERMS, join_strings([path.encode(), *(p.encode() for p in perms)])
        )

    async def rm(self, path: str) -> None:
        await self.request(MsgType.RM, path.encode() + b"\0")

    async def watch(self, path: str, token: str) -> None:
        await self.request(MsgType.WATCH, join_strings([path.encode(), token.encode()]))

    async def next_event(self, timeout: float | None = None) -> tuple[str, str]:
        return await asyncio.wait_for(self.events.get(), timeout or self._timeout)

    async def control(self, *args: str) -> bytes:
        """A CONTROL request (`introduce`, `release`, `help`) on Dom0's socket."""
        return await self.request(MsgType.CONTROL, join_strings([a.encode() for a in args]))
