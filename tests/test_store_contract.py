"""The store protocol's contract, run against every backend (SQLite and PostgreSQL).

Uniqueness of MAC, address and hostname+domain; all-or-nothing imports; change events
only after a commit; records read back exactly as written; schema versions migrated
forward on open, a newer one refused untouched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from metadata_server.errors import ConfigError, Conflict, ConflictRows, NotFound
from metadata_server.model import VM, Launch, State, parse_vm
from metadata_server.store import Change, Store, health_of, open_store, pg_schema
from metadata_server.store import sqlite as sqlite_store
from metadata_server.store.migrations import Migration
from tests.support.postgres import postgres_server  # noqa: F401  (a fixture)
from tests.support.records import guest_body, mac_of


def make_vm(n: int, **overrides: object) -> VM:
    spec = parse_vm(guest_body(n, **overrides), mac=mac_of(n)).spec
    return VM(
        spec=spec,
        instance_id=f"00000000-0000-4000-8000-{n:012d}",
        state=State.REGISTERED,
        state_times={"registered": 1000.0 + n},
        message=None,
        created_at=1000.0 + n,
        updated_at=1000.0 + n,
    )


@dataclass
class Backend:
    """A fresh, empty database of one backend, and raw SQL on it for setting up cases."""

    name: str
    url: str

    async def sql(self, statement: str) -> Any:
        """The first value of the first row `statement` returns (None if none)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.url, isolation_level=None)
            try:
                row = conn.execute(statement).fetchone()
            finally:
                conn.close()
            return row[0] if row else None
        pg = await asyncpg.connect(self.url, timeout=10)
        try:
            return await pg.fetchval(statement, timeout=10)
        finally:
            await pg.close(timeout=10)

    @property
    def migrations_module(self) -> Any:
        return sqlite_store if self.name == "sqlite" else pg_schema


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "registry.db"))
    server = request.getfixturevalue("postgres_server")
    return Backend("postgres", server.url(server.create_database()))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = open_store(backend.url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def events(store: Store) -> list[Change]:
    seen: list[Change] = []

    def listener(batch: Sequence[Change]) -> None:
        seen.extend(batch)

    store.subscribe(listener)
    return seen


async def test_create_get_list_round_trip(store: Store, events: list[Change]) -> None:
    vm = make_vm(1, user_data="#!/bin/sh\n", metadata={"k": "v"}, host="dom0-a")
    await store.create(vm)
    assert await store.get(vm.mac) == vm
    assert await store.list() == [vm]
    assert await store.list(host="dom0-a") == [vm]
    assert await store.list(host="dom0-b") == []
    assert await store.list(state=State.CONFIGURED) == []
    assert [(e.event, e.mac) for e in events] == [("created", vm.mac)]


async def test_a_launched_guests_record_reads_back_with_its_launch(store: Store) -> None:
    """`vm launch`'s part of the record (image, image id, delta, xl config; then
    `destroyed_at` when `vm destroy --keep-record` marks it), in every backend."""
    launch = Launch(
        image="/srv/xen/master.qcow2",
        image_id="ami-0123456789abcdef0",
        delta="/var/lib/metadata-server/launched/guest1/disk.qcow2",
        xl_config="/var/lib/metadata-server/launched/guest1/guest1.cfg",
    )
    vm = replace(make_vm(1), launch=launch)
    await store.create(vm)
    assert await store.get(vm.mac) == vm
    kept = replace(vm, launch=replace(launch, destroyed_at=2000.5), updated_at=2000.5)
    await store.replace(kept)
    assert await store.get(vm.mac) == kept


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (
            lambda: make_vm(1, hostname="other", ipv4={"address": "198.18.0.99", "prefix": 24}),
            "mac",
        ),
        (
            lambda: replace(make_vm(2), spec=replace(make_vm(2).spec, ipv4=make_vm(1).spec.ipv4)),
            "ipv4.address",
        ),
        (lambda: make_vm(2, hostname="guest1"), "hostname"),
    ],
    ids=["same-mac", "same-address", "same-hostname"],
)
async def test_clash_is_refused_and_names_the_holder(
    store: Store, events: list[Change], second: object, field: str
) -> None:
    first = make_vm(1)
    await store.create(first)
    with pytest.raises(Conflict) as error:
        await store.create(second())  # type: ignore[operator]
    assert error.value.field == field
    assert error.value.holder == first.mac
    assert await store.list() == [first]
    assert len(events) == 1, "a refused change publishes nothing"


async def test_same_hostname_in_other_domain_is_fine(store: Store) -> None:
    await store.create(make_vm(1, domain="a.example"))
    await store.create(make_vm(2, hostname="guest1", domain="b.example"))
    assert len(await store.list()) == 2


async def test_replace_and_delete(store: Store, events: list[Change]) -> None:
    vm = make_vm(1)
    await store.create(vm)
    changed = vm.with_state(State.CONFIGURED, 2000.0, "ok")
    await store.replace(changed, event="state")
    assert await store.get(vm.mac) == changed
    assert await store.list(state=State.CONFIGURED) == [changed]
    assert await store.delete(vm.mac) is True
    assert await store.delete(vm.mac) is False
    assert await store.get(vm.mac) is None
    assert [e.event for e in events] == ["created", "state", "deleted"]
    with pytest.raises(NotFound):
        await store.replace(vm)


async def test_import_is_all_or_nothing(store: Store, events: list[Change]) -> None:
    await store.create(make_vm(1))
    batch = [make_vm(n) for n in range(2, 50)] + [
        make_vm(60, ipv4={"address": "198.18.0.11", "prefix": 24})
    ]
    with pytest.raises(ConflictRows) as error:
        await store.import_all(batch)
    assert [(row.index, row.field) for row in error.value.rows] == [(48, "ipv4.address")]
    assert [vm.mac for vm in await store.list()] == [mac_of(1)]
    assert len(events) == 1


async def test_import_may_swap_addresses_between_existing_records(store: Store) -> None:
    a, b = make_vm(1), make_vm(2)
    await store.create(a)
    await store.create(b)
    swapped = [
        replace(a, spec=replace(a.spec, ipv4=b.spec.ipv4)),
        replace(b, spec=replace(b.spec, ipv4=a.spec.ipv4)),
    ]
    await store.import_all(swapped)
    assert (await store.get(a.mac)).spec.ipv4 == b.spec.ipv4  # type: ignore[union-attr]


async def test_import_names_duplicate_rows(store: Store) -> None:
    with pytest.raises(ConflictRows) as error:
        await store.import_all([make_vm(1), make_vm(2), make_vm(1)])
    assert [(row.index, row.field) for row in error.value.rows] == [(2, "mac")]
    assert await store.list() == []


async def test_import_publishes_one_batch(store: Store) -> None:
    batches: list[int] = []
    store.subscribe(lambda batch: batches.append(len(batch)))
    await store.import_all([make_vm(n) for n in range(1, 201)])
    assert batches == [200]


async def test_reopen_keeps_records_and_schema(backend: Backend) -> None:
    first = open_store(backend.url)
    await first.open()
    assert (first.schema.before, first.schema.after) == (0, 1)  # type: ignore[attr-defined]
    vm = make_vm(1)
    await first.create(vm)
    await first.close()
    again = open_store(backend.url)
    await again.open()
    try:
        assert not again.schema.migrated  # type: ignore[attr-defined]
        assert await again.list() == [vm]
    finally:
        await again.close()
    assert await backend.sql("SELECT max(version) FROM schema_version") == 1


async def test_newer_schema_is_refused_and_left_alone(backend: Backend) -> None:
    first = open_store(backend.url)
    await first.open()
    await first.create(make_vm(1))
    await first.close()
    await backend.sql("UPDATE schema_version SET version = 99")
    newer = open_store(backend.url)
    with pytest.raises(ConfigError) as error:
        await newer.open()
    assert "schema version 99" in error.value.detail
    assert "\n" not in error.value.detail
    assert "test-password" not in error.value.detail
    assert await backend.sql("SELECT max(version) FROM schema_version") == 99
    assert await backend.sql("SELECT count(*) FROM vms") == 1


async def test_older_schema_is_migrated_forward(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store(backend.url)
    await first.open()
    await first.create(make_vm(1))
    await first.close()
    module = backend.migrations_module
    step = Migration(2, "a table for a test", ("CREATE TABLE extra (x INTEGER)",))
    monkeypatch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS, step))
    newer = open_store(backend.url)
    await newer.open()
    try:
        assert (newer.schema.before, newer.schema.after) == (1, 2)  # type: ignore[attr-defined]
        assert [vm.mac for vm in await newer.list()] == [mac_of(1)]
    finally:
        await newer.close()
    assert await backend.sql("SELECT max(version) FROM schema_version") == 2
    assert await backend.sql("SELECT count(*) FROM extra") == 0


async def test_failed_migration_changes_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store(backend.url)
    await first.open()
    await first.close()
    module = backend.migrations_module
    step = Migration(
        2, "fails halfway", ("CREATE TABLE extra (x INTEGER)", "SELECT * FROM no_such_table")
    )
    monkeypatch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS, step))
    with pytest.raises(ConfigError):
        await open_store(backend.url).open()
    assert await backend.sql("SELECT max(version) FROM schema_version") == 1
    with pytest.raises((sqlite3.Error, asyncpg.PostgresError)):
        await backend.sql("SELECT count(*) FROM extra")


async def test_list_filters_by_host_and_state(store: Store) -> None:
    a = make_vm(1, host="dom0-a")
    b = make_vm(2, host="dom0-b")
    c = make_vm(3, host="dom0-a").with_state(State.CONFIGURED, 2000.0, "ok")
    await store.import_all([c, b, a])
    assert [vm.mac for vm in await store.list(host="dom0-a")] == [a.mac, c.mac]
    assert await store.list(host="dom0-a", state=State.CONFIGURED) == [c]
    assert [vm.mac for vm in await store.list()] == [a.mac, b.mac, c.mac]


async def test_events_carry_the_whole_record(store: Store, events: list[Change]) -> None:
    vm = make_vm(1, host="dom0-a")
    await store.create(vm)
    moved = replace(vm, spec=replace(vm.spec, host="dom0-b"))
    await store.replace(moved)
    await store.import_all([make_vm(2, host="dom0-b")])
    assert [(e.event, e.vm.spec.host if e.vm else None) for e in events] == [
        ("created", "dom0-a"),
        ("updated", "dom0-b"),
        ("created", "dom0-b"),
    ]


async def test_health_is_reported(backend: Backend, store: Store) -> None:
    health = health_of(store)
    assert health.healthy and health.last_error is None
    assert health.backend == {"sqlite": "sqlite", "postgres": "postgresql"}[backend.name]
