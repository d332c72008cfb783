"""The PostgreSQL store beyond the shared contract: the change feed between servers
(LISTEN/NOTIFY), outages and catching up, write serialisation, and bad connections.

Several stores on one database stand in for several servers; a real PostgreSQL server
(tests/support/postgres.py) is stopped, or has a role locked out, to make outages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace

import asyncpg
import pytest

from metadata_server.errors import ConfigError, Conflict, Unavailable
from metadata_server.model import VM, State
from metadata_server.store import Change
from metadata_server.store.health import health_of
from metadata_server.store.pg_feed import FeedTimings
from metadata_server.store.pg_schema import CHANGE_CHANNEL
from metadata_server.store.postgres import PostgresStore
from tests.support.postgres import (  # noqa: F401  (postgres_server is a fixture)
    PASSWORD,
    SUPERUSER_PASSWORD,
    PostgresServer,
    postgres_server,
)
from tests.support.records import mac_of
from tests.test_store_contract import make_vm

FAST = FeedTimings(
    connect_timeout=2.0,
    command_timeout=5.0,
    probe_interval=0.3,
    backoff_initial=0.1,
    backoff_max=0.4,
)


def many(n: int, **overrides: object) -> VM:
    """Guest `n` of up to thousands, on 198.18.0.0/16."""
    address = f"198.18.{(n + 10) // 256}.{(n + 10) % 256}"
    return make_vm(n, ipv4={"address": address, "prefix": 16}, **overrides)


class Recorder:
    def __init__(self, store: PostgresStore) -> None:
        self.events: list[Change] = []
        self.batches: list[int] = []
        store.subscribe(self._listen)

    def _listen(self, batch: Sequence[Change]) -> None:
        self.events.extend(batch)
        self.batches.append(len(batch))

    def seen(self) -> list[tuple[str, str]]:
        return [(change.event, change.mac) for change in self.events]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `check()` holds; fails after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.create_database()


@pytest.fixture
async def stores(
    postgres_server: PostgresServer,  # noqa: F811
    database: str,
) -> AsyncIterator[Callable[..., Awaitable[PostgresStore]]]:
    """Open stores on the test's database: `await open_one(user=...)`."""
    opened: list[PostgresStore] = []

    async def open_one(*, superuser: bool = False, follow: bool = True) -> PostgresStore:
        url = (
            postgres_server.superuser_url(database) if superuser else postgres_server.url(database)
        )
        store = PostgresStore(url, follow_changes=follow, timings=FAST)
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()


async def test_changes_reach_the_other_servers_subscribers(
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    a, b = await stores(), await stores()
    at_a, at_b = Recorder(a), Recorder(b)
    vm = make_vm(1, host="dom0-a")
    started = time.monotonic()
    await a.create(vm)
    await eventually(lambda: len(at_b.events) == 1)
    assert time.monotonic() - started < 1.0
    assert at_b.events == [Change("created", vm.mac, vm)]

    configured = vm.with_state(State.CONFIGURED, 2000.0, "ok")
    moved = replace(configured, spec=replace(configured.spec, host="dom0-b"))
    steps = [
        (a.replace(configured, event="state"), ("state", vm.mac)),
        (b.replace(moved), ("updated", vm.mac)),  # and the other way round
        (a.delete(vm.mac), ("deleted", vm.mac)),
    ]
    for write, event in steps:
        await write
        await eventually(lambda e=event: at_a.seen()[-1] == e and at_b.seen()[-1] == e)  # type: ignore[misc]
    expected = [("created", vm.mac), ("state", vm.mac), ("updated", vm.mac), ("deleted", vm.mac)]
    assert at_b.events[1].vm == configured
    assert at_a.events[2].vm == moved
    await asyncio.sleep(0.5)
    assert at_a.seen() == expected and at_b.seen() == expected, "each change exactly once"


async def test_quick_successive_changes_converge(
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    """A server may skip versions overwritten before it re-read them; never the last."""
    a, b = await stores(), await stores()
    at_a, at_b = Recorder(a), Recorder(b)
    vm = make_vm(1)
    await a.create(vm)
    versions = [vm.with_state(State.FETCHED, 2000.0 + n, f"step {n}") for n in range(20)]
    for n, version in enumerate(versions):
        await (a if n % 2 else b).replace(version, event="state")
    for recorder in (at_a, at_b):
        await eventually(lambda r=recorder: r.events[-1].vm == versions[-1])  # type: ignore[misc]
    await asyncio.sleep(0.3)
    assert at_a.events[-1].vm == versions[-1] and at_b.events[-1].vm == versions[-1]


async def test_an_import_is_one_notification_and_reaches_every_server(
    postgres_server: PostgresServer,  # noqa: F811
    database: str,
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    a, b = await stores(), await stores()
    at_b = Recorder(b)
    payloads: list[str] = []
    watcher = await asyncpg.connect(postgres_server.url(database), timeout=5)
    await watcher.add_listener(CHANGE_CHANNEL, lambda *args: payloads.append(args[3]))
    try:
        vms = [many(n, host="dom0-a") for n in range(1, 1001)]
        await a.import_all(vms)
        await eventually(lambda: len(at_b.events) == 1000)
        assert at_b.batches == [1000]
        assert {change.mac for change in at_b.events} == {vm.mac for vm in vms}
        assert len(payloads) == 1 and len(payloads[0]) < 200
        assert await b.list(host="dom0-a") == vms
    finally:
        await watcher.close(timeout=5)


async def test_concurrent_clashes_through_two_servers_store_one(
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    a, b = await stores(), await stores()
    for n in range(1, 11):
        first = make_vm(2 * n, ipv4={"address": f"198.18.1.{n}", "prefix": 24})
        second = make_vm(2 * n + 1, ipv4={"address": f"198.18.1.{n}", "prefix": 24})
        results = await asyncio.gather(a.create(first), b.create(second), return_exceptions=True)
        conflicts = [r for r in results if isinstance(r, Conflict)]
        assert len(conflicts) == 1 and results.count(None) == 1, results
        assert conflicts[0].field == "ipv4.address"
        assert conflicts[0].holder in (first.mac, second.mac)
    assert len(await a.list()) == 10


async def test_changes_missed_while_disconnected_arrive_after_reconnecting(
    postgres_server: PostgresServer,  # noqa: F811
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    b = await stores()  # connects as mds: the role this test locks out
    a = await stores(superuser=True, follow=False)
    at_b = Recorder(b)
    kept, gone = make_vm(1), make_vm(2)
    await a.import_all([kept, gone])
    await eventually(lambda: len(at_b.events) == 2)
    at_b.events.clear()

    postgres_server.set_login(False)
    try:
        postgres_server.disconnect()
        await eventually(lambda: not b.health.healthy)
        assert b.health.last_error and PASSWORD not in b.health.last_error
        assert health_of(b).since is not None
        with pytest.raises(Unavailable):
            await b.get(kept.mac)
        configured = kept.with_state(State.CONFIGURED, 3000.0, "ok")
        await a.replace(configured, event="state")
        await a.delete(gone.mac)
        added = [make_vm(n) for n in range(3, 6)]
        await a.import_all(added)
        await asyncio.sleep(0.3)
        assert at_b.events == []
    finally:
        postgres_server.set_login(True)
    await eventually(lambda: b.health.healthy)
    await eventually(lambda: len(at_b.events) == 5)
    assert sorted(at_b.seen()) == sorted(
        [("state", kept.mac), ("deleted", gone.mac)] + [("created", vm.mac) for vm in added]
    )
    assert next(c.vm for c in at_b.events if c.mac == kept.mac) == configured
    assert b.health.last_error is None


async def test_a_stopped_server_is_an_outage_not_a_crash(
    postgres_server: PostgresServer,  # noqa: F811
    stores: Callable[..., Awaitable[PostgresStore]],
) -> None:
    b = await stores()
    await b.create(make_vm(1))
    with postgres_server.stopped():
        await eventually(lambda: not b.health.healthy)
        with pytest.raises(Unavailable) as error:
            await b.create(make_vm(2))
        assert error.value.http_status == 503
        with pytest.raises(Unavailable):
            await b.list()
        postgres_server.start()
        await eventually(lambda: b.health.healthy, timeout=10)
    await b.create(make_vm(2))
    assert [vm.mac for vm in await b.list()] == [mac_of(1), mac_of(2)]


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (
            lambda server, db: server.url(db).replace(PASSWORD, "wrong-password"),
            "password authentication failed",
        ),
        (lambda server, db: server.url("no_such_database"), "does not exist"),
        (
            lambda server, db: f"postgresql://mds:{PASSWORD}@127.0.0.1:notaport/{db}",
            "bad port",
        ),
        (
            lambda server, db: server.url(db).replace(str(server.socket_dir), "/nonexistent"),
            "cannot open the registry database",
        ),
        (
            lambda server, db: server.url(db) + "&no_such_setting=1",
            "no_such_setting",
        ),
    ],
    ids=["wrong-password", "no-database", "bad-port", "no-server", "bad-parameter"],
)
async def test_bad_connections_are_one_clear_line_without_the_password(
    postgres_server: PostgresServer,  # noqa: F811
    database: str,
    make_url: Callable[[PostgresServer, str], str],
    expected: str,
) -> None:
    url = make_url(postgres_server, database)
    with pytest.raises(ConfigError) as error:  # noqa: PT012 (the URL or the connection refuses)
        store = PostgresStore(url)
        await store.open()
    detail = error.value.detail
    assert expected in detail
    assert "\n" not in detail
    assert PASSWORD not in detail and SUPERUSER_PASSWORD not in detail and "***" in detail
    tables = postgres_server.psql(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'vms'", database
    )
    assert tables == "0", "nothing was created"
