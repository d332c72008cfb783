"""The guest listener's connection limits, on a real server on port 0, with raw sockets:
what they refuse (503, 408, 411, 413, 431) and that ordinary HTTP still works through
them (keep-alive, pipelining, a body followed by another request)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.server_process import server_process
from tests.support.service import ADMIN_TOKEN, make_settings

LOCAL = {"address": "127.0.0.1", "prefix": 8, "gateway": "127.0.0.254"}


async def started(tmp_path: Path, **flags: object) -> MetadataService:
    service = MetadataService(make_settings(tmp_path, **flags))
    await service.start()
    assert service.registry is not None
    await service.registry.put(mac_of(1), guest_body(1, ipv4=LOCAL))
    return service


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[MetadataService]:
    service = await started(tmp_path, **{"guest.max_connections": 3, "guest.request_timeout": 0.5})
    try:
        yield service
    finally:
        await service.stop()


async def connect(service: MetadataService) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = service.guest_addresses[0]
    return await asyncio.open_connection(address.host, address.port)


async def responses(reader: asyncio.StreamReader, count: int) -> list[int]:
    """The status codes of the next `count` responses (bodies read by Content-Length)."""
    statuses = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        statuses.append(int(head.split(b" ", 2)[1]))
        _, has_length, rest = head.lower().partition(b"content-length:")
        if has_length:  # a 204 has no body and no length
            await reader.readexactly(int(rest.split(b"\r\n", 1)[0]))
    return statuses


def get(path: str = "/v1/config.txt", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n".encode() + extra + b"\r\n"


async def exchange(svc: MetadataService, data: bytes, count: int = 1) -> list[int]:
    reader, writer = await connect(svc)
    try:
        writer.write(data)
        return await responses(reader, count)
    finally:
        writer.close()


CASES = [
    ("keep-alive pair", get() + get(), 2, [200, 200]),
    ("pipelined ten", get() * 10, 10, [200] * 10),
    (
        "a body then a request",
        b"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 16\r\n\r\nstate=configured" + get(),
        2,
        [204, 200],
    ),
    ("head just under the limit", get(extra=(b"X-Pad: " + b"a" * 7900 + b"\r\n") * 2), 1, [200]),
    ("head over the limit", get(extra=b"X-Pad: " + b"a" * 16400 + b"\r\n"), 1, [431]),
    ("many small headers", get(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(80))), 1, [431]),
    ("a head cut across packets is still one head", get(extra=b"X-A: 1\r\n"), 1, [200]),
    (
        "a chunked body",
        b"POST /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        1,
        [411],
    ),
    (
        "a body over 64 KiB",
        b"POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
        1,
        [413],
    ),
    (
        "a good request after a too-large one is never read",
        get(extra=b"X: " + b"a" * 17000 + b"\r\n") + get(),
        1,
        [431],
    ),
]


@pytest.mark.parametrize(
    ("data", "count", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_requests_through_the_limits(
    svc: MetadataService, data: bytes, count: int, expected: list[int]
) -> None:
    assert await exchange(svc, data, count) == expected


async def test_bytes_one_at_a_time_make_one_request(svc: MetadataService) -> None:
    reader, writer = await connect(svc)
    try:
        for byte in get():
            writer.write(bytes([byte]))
            await writer.drain()
        assert await responses(reader, 1) == [200]
    finally:
        writer.close()


async def test_a_slow_head_gets_408(svc: MetadataService) -> None:
    reader, writer = await connect(svc)
    try:
        writer.write(b"GET /v1/config.txt HTTP/1.1\r\nHost: x\r\n")
        assert await responses(reader, 1) == [408]
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_not_a_slow_request(svc: MetadataService) -> None:
    """The request timeout runs from a request's first byte to its last, not in between."""
    reader, writer = await connect(svc)
    try:
        writer.write(get())
        assert await responses(reader, 1) == [200]
        await asyncio.sleep(0.8)  # longer than request_timeout
        writer.write(get())
        assert await responses(reader, 1) == [200]
    finally:
        writer.close()


async def test_connections_past_the_cap_get_503_and_others_are_served(
    svc: MetadataService,
) -> None:
    held = [await connect(svc) for _ in range(3)]
    try:
        reader, writer = await connect(svc)
        assert await responses(reader, 1) == [503]
        writer.close()
        held[0][1].close()
        await asyncio.sleep(0.1)
        assert await exchange(svc, get()) == [200], "a closed connection frees its place"
    finally:
        for _, writer in held:
            writer.close()


async def test_trusted_proxies_carry_many_connections(tmp_path: Path) -> None:
    service = await started(
        tmp_path, **{"guest.max_connections": 1, "guest.trust_proxy": ["127.0.0.0/8"]}
    )
    try:
        held = [await connect(service) for _ in range(3)]
        assert await exchange(service, get()) == [200]
        for _, writer in held:
            writer.close()
    finally:
        await service.stop()


def test_serve_raises_its_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    need_tools("prlimit")
    args = ["--db", str(tmp_path / "r.db"), "--guest-listen", "127.0.0.1:0"]
    args += ["--admin-listen", "127.0.0.1:0"]
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    prefix = ["prlimit", "--nofile=1024:4096", "--"]
    with server_process(args, tmp_path / "log", env=env, prefix=prefix) as server:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"]
