"""Two `metadata-server serve` processes on one PostgreSQL registry, as two Dom0s would
run them: a change through either admin API reaches the other's guest API within a
second; clashing writes through both store one record; a PostgreSQL outage leaves
guests served, and what changed while a server was cut off reaches it afterwards.

The guests are "whoever calls from 127.0.0.1 / 127.0.0.2" (the loopback network is all
local), so the tests read each server's guest API as the guest would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.postgres import (  # noqa: F401  (postgres_server is a fixture)
    PASSWORD,
    PostgresServer,
    postgres_server,
)
from tests.support.records import SAMPLE_HASH, mac_of
from tests.support.server_process import ServerProcess, server_process
from tests.support.service import ADMIN_TOKEN

GUEST = mac_of(201)
OTHER_GUEST = mac_of(202)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Cluster:
    a: ServerProcess  # connects as the superuser
    b: ServerProcess  # connects as `mds`, the role the outage test locks out
    server: PostgresServer


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    database = postgres_server.create_database()
    logs = tmp_path_factory.mktemp("cluster")
    common = [
        "--guest-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--verify-neighbour",
        "never",
    ]
    env = {"METADATA_SERVER_ADMIN_TOKEN": ADMIN_TOKEN, "METADATA_SERVER_GUEST_ALLOW_LOOPBACK": "1"}
    # B first: the database's owner creates the schema.
    b_url = postgres_server.url(database)
    with server_process(["--db", b_url, *common], logs / "b.log", env=env) as b:
        a_url = postgres_server.superuser_url(database)
        with server_process(["--db", a_url, *common], logs / "a.log", env=env) as a:
            yield Cluster(a, b, postgres_server)
    for log in ("a.log", "b.log"):
        assert PASSWORD not in (logs / log).read_text(), "a password reached the log"


@pytest.fixture
async def http() -> AsyncIterator[Callable[..., Awaitable[tuple[int, Any]]]]:
    """`await http(method, url, json=..., source="127.0.0.2")` → (status, JSON or None)."""
    sessions: dict[str, aiohttp.ClientSession] = {}

    async def call(method: str, url: str, *, source: str = "127.0.0.1", **kwargs: Any) -> Any:
        if source not in sessions:
            connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
            sessions[source] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=10)
            )
        async with sessions[source].request(method, url, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body

    try:
        yield call
    finally:
        for session in sessions.values():
            await session.close()


def guest_body(n: int, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "hostname": f"cluster{n}",
        "ipv4": {"address": address, "prefix": 8},
        "password_hash": SAMPLE_HASH,
        "host": "dom0-b",
        **extra,
    }


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until `await check()` holds; fails after `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_registration_through_a_is_served_by_b_within_a_second(
    cluster: Cluster, http: Callable[..., Awaitable[tuple[int, Any]]]
) -> None:
    config = f"{cluster.b.guest_url}/v1/config"
    assert (await http("GET", config))[0] == 404
    status, _ = await http(
        "PUT",
        f"{cluster.a.admin_url}/api/v1/vms/{GUEST}",
        json=guest_body(1, "127.0.0.1", metadata={"role": "one"}),
        headers=AUTH,
    )
    assert status == 201

    async def served_by_b() -> bool:
        status, body = await http("GET", config)
        return status == 200 and body["metadata"] == {"role": "one"}

    assert await until(served_by_b, timeout=1.0) < 1.0
    # B's guest read moved the state to `fetched`; A's admin API reports it.
    status, body = await http("GET", f"{cluster.a.admin_url}/api/v1/vms/{GUEST}", headers=AUTH)
    assert (status, body["state"]) == (200, "fetched")


async def test_clashing_writes_through_both_servers_store_one_record(
    cluster: Cluster, http: Callable[..., Awaitable[tuple[int, Any]]]
) -> None:
    for n in range(10, 16):
        body = guest_body(n, f"198.18.2.{n}")
        results = await asyncio.gather(
            http("PUT", f"{cluster.a.admin_url}/api/v1/vms/{mac_of(n)}", json=body, headers=AUTH),
            http(
                "PUT",
                f"{cluster.b.admin_url}/api/v1/vms/{mac_of(n + 100)}",
                json=body,
                headers=AUTH,
            ),
        )
        assert sorted(status for status, _ in results) == [201, 409], results
        refused = next(reply for status, reply in results if status == 409)
        assert refused["field"] == "ipv4.address"
    status, body = await http("GET", f"{cluster.b.admin_url}/api/v1/vms", headers=AUTH)
    clashing = [vm for vm in body["vms"] if vm["ipv4"]["address"].startswith("198.18.2.")]
    assert status == 200 and len(clashing) == 6


async def test_an_outage_leaves_guests_served_and_b_catches_up_afterwards(
    cluster: Cluster, http: Callable[..., Awaitable[tuple[int, Any]]]
) -> None:
    a_admin, b_guest = cluster.a.admin_url, f"{cluster.b.guest_url}/v1/config"
    for mac, n, address in ((GUEST, 1, "127.0.0.1"), (OTHER_GUEST, 2, "127.0.0.2")):
        body = guest_body(n, address, metadata={"role": "before"})
        assert (await http("PUT", f"{a_admin}/api/v1/vms/{mac}", json=body, headers=AUTH))[0] in (
            200,
            201,
        )

    async def b_serves(source: str, role: str | None) -> bool:
        status, body = await http("GET", b_guest, source=source)
        if role is None:
            return status == 404
        return status == 200 and body["metadata"]["role"] == role

    await until(lambda: b_serves("127.0.0.2", "before"), timeout=1.0)
    await until(lambda: b_serves("127.0.0.1", "before"), timeout=1.0)

    with cluster.server.stopped():
        await until(lambda: _logged(cluster.b, "lost the registry database"), timeout=5)
        for server in (cluster.a, cluster.b):
            status, body = await http("GET", f"{server.guest_url}/v1/config")
            assert (status, body["metadata"]["role"]) == (200, "before"), "served from memory"
        status, body = await http(
            "PATCH", f"{a_admin}/api/v1/vms/{GUEST}", json={"metadata": {}}, headers=AUTH
        )
        assert status == 503 and "unreachable" in body["detail"]

    # PostgreSQL is back; B alone stays cut off while A changes and deletes guests.
    cluster.server.set_login(False)
    try:
        cluster.server.disconnect()
        patch = {"metadata": {"role": "after"}}

        async def patched_through_a() -> bool:
            url = f"{a_admin}/api/v1/vms/{GUEST}"
            return (await http("PATCH", url, json=patch, headers=AUTH))[0] == 200

        await until(patched_through_a, timeout=10)
        assert (await http("DELETE", f"{a_admin}/api/v1/vms/{OTHER_GUEST}", headers=AUTH))[0] == 204
        await asyncio.sleep(0.5)
        assert await b_serves("127.0.0.1", "before"), "B cannot have heard of it yet"
        assert await b_serves("127.0.0.2", "before")
    finally:
        cluster.server.set_login(True)
    await until(lambda: b_serves("127.0.0.1", "after"), timeout=10)
    await until(lambda: b_serves("127.0.0.2", None), timeout=1)
    assert _logged_now(cluster.b, "caught up")


def _logged_now(server: ServerProcess, text: str) -> bool:
    return text in server.log()


async def _logged(server: ServerProcess, text: str) -> bool:
    return _logged_now(server, text)
