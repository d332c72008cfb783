"""`Launcher`: a launch's steps with the real registry (SQLite), the real qemu-img for the
delta and the xl stand-in for the domain; a failure or a cancellation at each step
leaves nothing behind (no registration, no delta, no config, no domain), a second
cancellation during the rollback included; the rollback's own failures are reported
together while every other undo still runs; `keep` keeps what was made."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metadata_server.errors import Conflict, InvalidInput
from metadata_server.images.errors import NotAMaster
from metadata_server.launch.errors import (
    CleanupIncomplete,
    LaunchFailed,
    LaunchInProgress,
    NoFreeAddress,
    ToolMissing,
)
from metadata_server.launch.launcher import Launcher, LaunchSettings
from metadata_server.launch.request import LaunchRequest
from metadata_server.launch.xl import Xl
from metadata_server.model import State
from metadata_server.registry import Registry
from tests.launch.conftest import NOTHING, XlState

STEPS = ("directory", "register", "clone", "config", "create", "wait")
Leftovers = Callable[[], Any]


def request(master: Path, **changes: Any) -> LaunchRequest:
    values: dict[str, Any] = {"name": "web1", "image": str(master), "wait": 5.0}
    values.update(changes)
    return LaunchRequest(**values)


def configures(registry: Registry) -> Callable[[dict[str, Any]], Any]:
    """A progress callback that, once the wait starts, has the guest report configured."""

    async def progress(event: dict[str, Any]) -> None:
        if event.get("step") == "wait":
            (vm,) = await registry.list()
            asyncio.get_running_loop().call_later(
                0.05, lambda: asyncio.ensure_future(registry.set_state(vm.mac, State.CONFIGURED))
            )

    return progress


async def test_a_launch_registers_clones_writes_and_creates(
    make_launcher: Callable[..., Launcher],
    registry: Registry,
    master: Path,
    xl_state: XlState,
    launch_settings: LaunchSettings,
) -> None:
    launcher = make_launcher()
    result = await launcher.launch(request(master, password="s3cret-pw"), configures(registry))
    assert result.configured
    assert [name for name, _ in result.steps] == list(STEPS)
    vm = result.vm
    assert vm.mac.startswith("00:16:3e:")
    assert vm.spec.hostname == "web1"
    assert (vm.spec.ipv4.address, vm.spec.ipv4.gateway) == ("198.18.0.3", "198.18.0.1")
    assert vm.spec.password_hash is not None and vm.spec.password_hash.startswith("$6$")
    assert vm.launch is not None and vm.launch.image_id == result.plan.master.image_id
    directory = launch_settings.directory / "web1"
    config = directory / "web1.cfg"
    assert vm.launch.xl_config == str(config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "launch.json").stat().st_mode) == 0o600
    assert f"mac={vm.mac}, bridge=xenbr0" in config.read_text()
    assert "s3cret" not in config.read_text() + (directory / "launch.json").read_text()
    info = json.loads(
        __import__("subprocess")
        .run(
            ["qemu-img", "info", "--output=json", "-U", vm.launch.delta],
            capture_output=True,
            check=True,
        )
        .stdout
    )
    assert info["backing-filename"] == os.path.realpath(master)
    assert xl_state.commands() == ["domid", "create"]
    assert xl_state.domains() == ["web1"]
    stored = await registry.get(vm.mac)
    assert stored.launch == vm.launch


async def test_a_second_launch_takes_the_next_address(
    make_launcher: Callable[..., Launcher], master: Path
) -> None:
    launcher = make_launcher()
    first = await launcher.launch(request(master, wait=0))
    second = await launcher.launch(request(master, name="web2", wait=0))
    assert (first.vm.spec.ipv4.address, second.vm.spec.ipv4.address) == (
        "198.18.0.3",
        "198.18.0.4",
    )
    assert first.vm.mac != second.vm.mac
    assert first.plan.uuid != second.plan.uuid


async def test_a_wait_that_ends_leaves_a_booting_guest_running(
    make_launcher: Callable[..., Launcher], master: Path, xl_state: XlState
) -> None:
    result = await make_launcher().launch(request(master, wait=0.2))
    assert not result.configured
    assert result.vm.state is State.REGISTERED
    assert xl_state.domains() == ["web1"]


# --- checked before anything is made ------------------------------------------------------


async def test_bad_requests_change_nothing(
    make_launcher: Callable[..., Launcher],
    registry: Registry,
    master: Path,
    tmp_path: Path,
    xl_state: XlState,
    leftovers: Leftovers,
) -> None:
    launcher = make_launcher()
    taken = await launcher.launch(request(master, name="taken", wait=0))
    before = await leftovers()
    not_a_master = tmp_path / "plain.qcow2"
    not_a_master.write_bytes(b"QFI")
    cases: list[tuple[LaunchRequest, type[Exception], str]] = [
        (request(master, name="taken"), Conflict, "registered"),
        (request(master, ip="10.1.2.3"), InvalidInput, "outside every configured"),
        (request(master, ip=taken.vm.spec.ipv4.address), Conflict, "already reserved"),
        (request(not_a_master), NotAMaster, "not a prepared master"),
        (request(tmp_path / "missing.qcow2"), NotAMaster, "does not exist"),
    ]
    for wanted, error, match in cases:
        with pytest.raises(error, match=match):
            await launcher.plan(wanted)
    assert await leftovers() == before


async def test_xl_missing_is_named(
    make_launcher: Callable[..., Launcher], master: Path, leftovers: Leftovers
) -> None:
    launcher = make_launcher()
    launcher.xl = Xl(command=("/nonexistent/xl",))
    with pytest.raises(ToolMissing, match="xl is not installed"):
        await launcher.plan(request(master))
    assert await leftovers() == NOTHING


async def test_a_full_subnet(
    make_launcher: Callable[..., Launcher], master: Path, leftovers: Leftovers
) -> None:
    launcher = make_launcher()
    for n in range(4):  # .3 to .6: the /29's free addresses
        await launcher.launch(request(master, name=f"g{n}", wait=0))
    with pytest.raises(NoFreeAddress):
        await launcher.plan(request(master, name="g9"))


async def test_a_domain_of_that_name_running_already(
    make_launcher: Callable[..., Launcher], master: Path, xl_state: XlState
) -> None:
    (xl_state.directory / "domains").mkdir()
    (xl_state.directory / "domains" / "web1").write_text("7")
    with pytest.raises(Conflict, match="Xen domain named web1"):
        await make_launcher().plan(request(master))


async def test_a_launch_directory_left_behind(
    make_launcher: Callable[..., Launcher], master: Path, launch_settings: LaunchSettings
) -> None:
    (launch_settings.directory / "web1").mkdir(parents=True)
    with pytest.raises(LaunchInProgress, match="--force"):
        await make_launcher().plan(request(master))


# --- failures and cancellations at each step ----------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("at", STEPS)
async def test_a_failure_at_each_step_rolls_back_everything(
    make_launcher: Callable[..., Launcher],
    master: Path,
    xl_state: XlState,
    leftovers: Leftovers,
    at: str,
) -> None:
    seen: list[str] = []

    async def progress(event: dict[str, Any]) -> None:
        seen.append(event["step"])
        if event["step"] == at:
            raise Boom(at)

    with pytest.raises(Boom):
        await make_launcher().launch(request(master), progress)
    assert seen[-1] == at
    assert await leftovers() == NOTHING
    if STEPS.index(at) > STEPS.index("create"):
        assert xl_state.commands()[-2:] == ["domid", "destroy"]


@pytest.mark.parametrize("at", STEPS)
async def test_a_cancellation_at_each_step_leaves_nothing(
    make_launcher: Callable[..., Launcher], master: Path, leftovers: Leftovers, at: str
) -> None:
    async def progress(event: dict[str, Any]) -> None:
        if event["step"] == at:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

    task = asyncio.ensure_future(make_launcher().launch(request(master), progress))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers() == NOTHING


async def test_a_cancellation_while_xl_create_runs_and_again_during_the_rollback(
    make_launcher: Callable[..., Launcher],
    master: Path,
    xl_state: XlState,
    leftovers: Leftovers,
) -> None:
    xl_state.slow("create", 5)
    started = asyncio.Event()

    async def progress(event: dict[str, Any]) -> None:
        if event["step"] == "create":
            started.set()

    task = asyncio.ensure_future(make_launcher().launch(request(master), progress))
    await started.wait()
    await asyncio.sleep(0.3)
    xl_state.slow("domid", 0.5)  # the rollback's first command is slow now
    task.cancel()
    await asyncio.sleep(0.2)
    task.cancel()  # again, while the rollback runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers() == NOTHING


async def test_real_failures_roll_back(
    make_launcher: Callable[..., Launcher],
    registry: Registry,
    master: Path,
    xl_state: XlState,
    leftovers: Leftovers,
) -> None:
    launcher = make_launcher()
    xl_state.fail("create", "libxl: error: cannot create domain")
    with pytest.raises(Exception, match="cannot create domain"):
        await launcher.launch(request(master))
    assert await leftovers() == NOTHING

    (xl_state.directory / "fail-create").unlink()

    async def master_changes(event: dict[str, Any]) -> None:
        if event["step"] == "clone":
            os.utime(master, (1, 1))

    with pytest.raises(NotAMaster, match="may have changed"):
        await launcher.launch(request(master), master_changes)
    assert await leftovers() == NOTHING


async def test_an_address_taken_meanwhile_keeps_the_other_guests_record(
    make_launcher: Callable[..., Launcher],
    registry: Registry,
    master: Path,
    leftovers: Leftovers,
) -> None:
    launcher = make_launcher()
    plan = await launcher.plan(request(master))
    body = {"hostname": "other", "ipv4": {"address": str(plan.address), "prefix": 29}}
    await registry.put("02:00:00:00:00:01", body)
    with pytest.raises(Conflict, match="already reserved"):
        await launcher.run(plan)
    assert await leftovers() == {**NOTHING, "registrations": ["other"]}


async def test_a_guest_that_reports_failure_is_rolled_back(
    make_launcher: Callable[..., Launcher],
    registry: Registry,
    master: Path,
    leftovers: Leftovers,
) -> None:
    async def progress(event: dict[str, Any]) -> None:
        if event.get("step") == "wait":
            (vm,) = await registry.list()
            await registry.set_state(vm.mac, State.FAILED, "chpasswd failed")

    with pytest.raises(LaunchFailed, match="chpasswd failed"):
        await make_launcher().launch(request(master), progress)
    assert await leftovers() == NOTHING


async def test_an_undo_that_fails_is_reported_and_the_others_still_run(
    make_launcher: Callable[..., Launcher],
    master: Path,
    xl_state: XlState,
    leftovers: Leftovers,
) -> None:
    async def progress(event: dict[str, Any]) -> None:
        if event["step"] == "wait":
            xl_state.fail("destroy", "libxl: error: domain busy")
            raise Boom("wait")

    with pytest.raises(CleanupIncomplete, match=r"domain web1: .*domain busy") as caught:
        await make_launcher().launch(request(master), progress)
    assert len(caught.value.problems) == 1
    assert await leftovers() == {**NOTHING, "domains": ["web1"]}


async def test_keep_keeps_what_was_made(
    make_launcher: Callable[..., Launcher], master: Path, leftovers: Leftovers
) -> None:
    async def progress(event: dict[str, Any]) -> None:
        if event["step"] == "wait":
            raise Boom("wait")

    with pytest.raises(Boom):
        await make_launcher().launch(request(master, keep=True), progress)
    left = await leftovers()
    assert left["registrations"] == ["web1"]
    assert left["domains"] == ["web1"]
    assert any(path.endswith("disk.qcow2") for path in left["launch files"])
