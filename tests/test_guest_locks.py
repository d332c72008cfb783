"""The registry's locks: guests alongside each other, one guest alone, an import over all."""

from __future__ import annotations

import asyncio

import pytest

from metadata_server.guest_locks import GuestLocks

A = "02:00:00:00:00:0a"
B = "02:00:00:00:00:0b"


async def hold(
    locks: GuestLocks,
    mac: str,
    inside: asyncio.Event,
    release: asyncio.Event,
    order: list[str] | None = None,
) -> None:
    """Hold one guest's lock from `inside` until `release`, noting when it lets go."""
    async with locks.guest(mac):
        inside.set()
        await release.wait()
        if order is not None:
            order.append("holder out")


async def test_two_guests_hold_at_once_and_one_guest_waits() -> None:
    locks = GuestLocks()
    order: list[str] = []
    inside_a = asyncio.Event()
    release_a = asyncio.Event()

    async def first_on_a() -> None:
        async with locks.guest(A):
            order.append("a1 in")
            inside_a.set()
            await release_a.wait()
            order.append("a1 out")

    async def second_on_a() -> None:
        async with locks.guest(A):
            order.append("a2 in")

    async def on_b() -> None:
        async with locks.guest(B):
            order.append("b in")

    holder = asyncio.create_task(first_on_a())
    await inside_a.wait()
    waiter = asyncio.create_task(second_on_a())
    await asyncio.wait_for(on_b(), 1)  # B does not wait for A
    await asyncio.sleep(0.01)
    assert order == ["a1 in", "b in"]
    release_a.set()
    await asyncio.gather(holder, waiter)
    assert order == ["a1 in", "b in", "a1 out", "a2 in"]
    assert len(locks) == 0


async def test_every_guest_waits_for_holders_and_goes_before_newcomers() -> None:
    locks = GuestLocks()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def importer() -> None:
        async with locks.every_guest():
            order.append("import")

    async def newcomer() -> None:
        async with locks.guest(B):
            order.append("newcomer")

    first = asyncio.create_task(hold(locks, A, inside, release, order))
    await inside.wait()
    bulk = asyncio.create_task(importer())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(newcomer())
    await asyncio.sleep(0.01)
    assert order == []  # the import waits for the holder; the newcomer for the import
    release.set()
    await asyncio.gather(first, bulk, late)
    assert order == ["holder out", "import", "newcomer"]


async def test_a_cancelled_import_lets_guests_in() -> None:
    locks = GuestLocks()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def importer() -> None:
        async with locks.every_guest():
            pytest.fail("the import ran although it was cancelled")

    first = asyncio.create_task(hold(locks, A, inside, release))
    await inside.wait()
    bulk = asyncio.create_task(importer())
    await asyncio.sleep(0.01)

    async def newcomer() -> None:
        async with locks.guest(B):
            pass

    late = asyncio.create_task(newcomer())
    await asyncio.sleep(0.01)
    assert not late.done()
    bulk.cancel()
    await asyncio.wait_for(late, 1)
    release.set()
    await first
    assert len(locks) == 0


async def test_an_error_inside_releases_the_guest() -> None:
    locks = GuestLocks()
    with pytest.raises(RuntimeError):
        async with locks.guest(A):
            raise RuntimeError("write failed")
    async with asyncio.timeout(1), locks.guest(A), locks.guest(B):
        pass
    async with asyncio.timeout(1), locks.every_guest():
        pass
