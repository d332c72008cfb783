"""`destroy`: a launched guest's domain, delta, config, launch record and registration
go (or the registration stays, marked, with keep_record); a guest this Dom0 did not
launch is refused unless forced; a failing `xl destroy` touches nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from metadata_server.launch.destroy import DestroyResult, destroy
from metadata_server.launch.errors import NotLaunched
from metadata_server.launch.launcher import Launcher, LaunchSettings
from metadata_server.launch.request import DestroyRequest, LaunchRequest
from metadata_server.launch.xl import Xl
from metadata_server.registry import Registry
from metadata_server.xen.errors import XenCommandFailed
from tests.launch.conftest import NOTHING, XlState

Leftovers = Callable[[], Any]
Destroy = Callable[..., Awaitable[DestroyResult]]


@pytest.fixture
def destroy_here(registry: Registry, xl: Xl, launch_settings: LaunchSettings) -> Destroy:
    async def run(name: str, **options: bool) -> DestroyResult:
        return await destroy(
            registry, xl, launch_settings.directory, name, DestroyRequest(**options)
        )

    return run


@pytest.fixture
async def web1(make_launcher: Callable[..., Launcher], master: Path) -> None:
    await make_launcher().launch(LaunchRequest(name="web1", image=str(master)))


@pytest.mark.usefixtures("web1")
async def test_destroy_leaves_nothing(destroy_here: Destroy, leftovers: Leftovers) -> None:
    result = await destroy_here("web1")
    assert (result.domain_destroyed, result.record) == (True, "deleted")
    assert len(result.removed) == 4  # config, delta, launch record, directory
    assert await leftovers() == NOTHING


@pytest.mark.usefixtures("web1")
async def test_destroy_keeping_the_record_marks_it(
    destroy_here: Destroy, registry: Registry, leftovers: Leftovers
) -> None:
    result = await destroy_here("web1", keep_record=True)
    assert result.record == "kept"
    (vm,) = await registry.list()
    assert vm.launch is not None and vm.launch.destroyed_at is not None
    assert await leftovers() == {**NOTHING, "registrations": ["web1"]}


async def test_a_guest_not_launched_here_is_refused_unless_forced(
    destroy_here: Destroy, registry: Registry, xl_state: XlState, leftovers: Leftovers
) -> None:
    body = {"hostname": "byhand", "ipv4": {"address": "198.18.0.5", "prefix": 29}}
    await registry.put("00:16:3e:00:00:05", body)
    (xl_state.directory / "domains").mkdir()
    (xl_state.directory / "domains" / "byhand").write_text("3")
    with pytest.raises(NotLaunched, match="not launched by this Dom0"):
        await destroy_here("byhand")
    assert await leftovers() == {**NOTHING, "registrations": ["byhand"], "domains": ["byhand"]}
    result = await destroy_here("byhand", force=True)
    assert (result.domain_destroyed, result.record) == (True, "deleted")
    assert await leftovers() == NOTHING


@pytest.mark.usefixtures("web1")
async def test_a_failing_xl_destroy_touches_nothing_else(
    destroy_here: Destroy, xl_state: XlState, leftovers: Leftovers
) -> None:
    before = await leftovers()
    xl_state.fail("destroy", "libxl: error: domain busy")
    with pytest.raises(XenCommandFailed, match="domain busy"):
        await destroy_here("web1")
    assert await leftovers() == before
