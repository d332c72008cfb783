"""The store protocol's contract, run against every backend (SQLite now).

Uniqueness of MAC, address and hostname+domain; all-or-nothing imports; change events
only after a commit; records read back exactly as written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from metadata_server.errors import Conflict, ConflictRows, NotFound
from metadata_server.model import VM, State, parse_vm
from metadata_server.store import Change, Store, open_store
from tests.conftest import guest_body, mac_of


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


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = open_store(str(tmp_path / "registry.db"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


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
