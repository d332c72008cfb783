"""One way to wait (Registry.wait on the change feed, waiting.KeyedWaiters under it):
at once when it already holds, on the change that makes it hold, with the record as it is
when the time is up, None once the guest is deleted; several waits on one guest each
hear it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.support.records import guest_body, mac_of
from tests.support.service import make_settings


async def started(tmp_path: Path) -> MetadataService:
    service = MetadataService(make_settings(tmp_path))
    await service.start()
    assert service.registry is not None
    await service.registry.put(mac_of(1), guest_body(1))
    return service


async def test_waits(tmp_path: Path) -> None:
    service = await started(tmp_path)
    registry = service.registry
    assert registry is not None
    try:
        at_once = await registry.wait(mac_of(1), lambda vm: vm is not None, timeout=0)
        assert at_once is not None and at_once.state is State.REGISTERED

        def configured(vm: object) -> bool:
            return getattr(vm, "state", None) is State.CONFIGURED

        waits = [asyncio.create_task(registry.wait(mac_of(1), configured, 5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waits)
        await registry.set_state(mac_of(1), State.CONFIGURED, "ok")
        records = await asyncio.gather(*waits)
        assert all(vm is not None and vm.state is State.CONFIGURED for vm in records)

        timed_out = await registry.wait(mac_of(1), lambda vm: False, timeout=0.1)
        assert timed_out is not None and timed_out.state is State.CONFIGURED

        gone = asyncio.create_task(registry.wait(mac_of(1), lambda vm: vm is None, 5))
        await asyncio.sleep(0.05)
        await registry.delete(mac_of(1))
        assert await gone is None
        assert len(registry._waiters) == 0 and registry._watched == {}
    finally:
        await service.stop()
