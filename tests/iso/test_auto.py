"""Automatic ISO fallback: who is provisioned when, driven by the registry's change feed,
the vif backends in the stand-in xenstored, and an injected clock. One case runs the
real flow end to end (the guest played by the real xenstore-write)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from metadata_server.errors import Unavailable
from metadata_server.iso.auto import AutoFallback, AutoSettings
from metadata_server.iso.provision import Provisioner, ProvisionResult
from metadata_server.model import State
from tests.iso.conftest import World
from tests.iso.test_provision import KEY, guest_writes, read_nonce
from tests.support.records import guest_body, mac_of

MAC = mac_of(1)
AFTER = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingProvisioner(Provisioner):
    """Records what AutoFallback asks for instead of running the flow (tested elsewhere)."""

    def __init__(self, real: Provisioner) -> None:
        super().__init__(real.registry, real.xen, real.isos, real.documents)
        self.calls: list[tuple[str, Any]] = []

    async def provision(self, mac: str, **kwargs: Any) -> ProvisionResult:
        self.calls.append((mac, kwargs.get("domid")))
        raise Unavailable("recorded, not run")  # the attempt logs nothing more


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("state", "vif_domids", "steps", "provisioned"),
    [
        (State.LEASED, [5], [AFTER + 1], [(MAC, 5)]),
        (State.LEASED, [5], [AFTER - 1], []),
        (State.LEASED, [], [AFTER + 1], []),
        (State.REGISTERED, [5], [AFTER + 1], []),  # first look: its domain just appeared
        (State.REGISTERED, [5], [1, AFTER + 2], [(MAC, 5)]),
        (State.REGISTERED, [5], [1, AFTER], []),
        (State.REGISTERED, [], [1, AFTER + 2], []),
        (State.REGISTERED, [5, 6], [1, AFTER + 2], []),  # its MAC on two domains
        (State.FETCHED, [5], [1, AFTER + 2], []),
        (State.CONFIGURED, [5], [1, AFTER + 2], []),
        (State.FAILED, [5], [1, AFTER + 2], []),
    ],
    ids=[
        "leased-late",
        "leased-in-time",
        "leased-not-running",
        "registered-first-look",
        "registered-late",
        "registered-in-time",
        "registered-not-running",
        "mac-on-two-domains",
        "fetched",
        "configured",
        "failed",
    ],
)
async def test_who_is_provisioned(
    world: World,
    state: State,
    vif_domids: list[int],
    steps: list[float],
    provisioned: list[tuple[str, int]],
) -> None:
    await world.registry.put(MAC, guest_body(1))
    if state is not State.REGISTERED:
        vm = await world.registry.set_state(MAC, state)
    else:
        vm = await world.registry.get(MAC)
    for devid, domid in enumerate(vif_domids):
        world.vif(domid, MAC, devid)
    clock = Clock()
    base = vm.state_times.get(State.LEASED.value, vm.updated_at)
    recorder = RecordingProvisioner(world.provisioner)
    auto = AutoFallback(recorder, AutoSettings(after=AFTER), clock=clock)
    await auto.start(run_loop=False)
    try:
        for step in steps:
            clock.now = base + step
            await auto.check()
        await settle()
    finally:
        await auto.stop()
    assert recorder.calls == provisioned


async def test_changes_start_and_stop_the_clock(world: World) -> None:
    clock = Clock()
    recorder = RecordingProvisioner(world.provisioner)
    auto = AutoFallback(recorder, AutoSettings(after=AFTER), clock=clock)
    await auto.start(run_loop=False)
    try:
        await world.registry.put(MAC, guest_body(1))  # registered after the start
        world.vif(5, MAC)
        assert auto.waiting == {MAC: None}
        clock.now = 1000
        await auto.check()
        assert auto.waiting == {MAC: 1000}
        await world.registry.patch(MAC, {"metadata": {"role": "db"}})  # an edit: clock runs on
        assert auto.waiting == {MAC: 1000}
        await world.registry.mark_fetched(MAC)  # it read its configuration after all
        assert auto.waiting == {}
        await world.registry.rearm(MAC)  # waits again, from its domain's next sighting
        assert auto.waiting == {MAC: None}
        await world.registry.delete(MAC)
        assert auto.waiting == {}
        clock.now = 1000 + AFTER + 1
        await auto.check()
        await settle()
    finally:
        await auto.stop()
    assert recorder.calls == []


async def test_at_most_parallel_attempts(world: World) -> None:
    macs = [mac_of(n) for n in (1, 2, 3)]
    for n, mac in enumerate(macs, start=1):
        await world.registry.put(mac, guest_body(n))
        await world.registry.set_state(mac, State.LEASED)
        world.vif(n + 10, mac)
    gate = asyncio.Event()

    class Slow(RecordingProvisioner):
        async def provision(self, mac: str, **kwargs: Any) -> ProvisionResult:
            self.calls.append((mac, kwargs.get("domid")))
            await gate.wait()
            raise Unavailable("recorded, not run")

    clock = Clock()
    clock.now = 10**10
    slow = Slow(world.provisioner)
    auto = AutoFallback(slow, AutoSettings(after=AFTER, parallel=2), clock=clock)
    await auto.start(run_loop=False)
    try:
        assert len(await auto.check()) == 2
        assert await auto.check() == []  # both slots busy
        gate.set()
        await settle()
        assert len(await auto.check()) == 1
        await settle()
    finally:
        await auto.stop()
    assert sorted(mac for mac, _ in slow.calls) == macs


async def test_late_guest_is_configured_by_iso_end_to_end(world: World) -> None:
    await world.registry.put(MAC, guest_body(1))
    vm = await world.registry.set_state(MAC, State.LEASED)
    world.vif(5, MAC)
    leased = vm.state_times[State.LEASED.value]
    clock = Clock()
    clock.now = leased + AFTER + 1
    auto = AutoFallback(world.provisioner, AutoSettings(after=AFTER, interval=0.05), clock=clock)
    await auto.start()  # with its own loop
    try:
        nonce = read_nonce(await world.attached(5))
        assert await guest_writes(world, 5, f"{KEY}/done", nonce) == 0
        await world.until(MAC, State.CONFIGURED)
    finally:
        await auto.stop()
    await asyncio.sleep(0.1)
    world.assert_nothing_left()
    assert auto.waiting == {}
