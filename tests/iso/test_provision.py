"""The ISO flow's failure paths, with the guest played by the real xenstore-write on its
own domain socket (after reading the nonce from its attached "CD-ROM", the loop device):
a guest that never answers, one that dies, wrong nonces and other domains, a guest's own
failure report, xl missing, failing or hanging, an unwritable or full ISO directory,
bad input, a flow cut short by the server shutting down, and leftovers of a crash.
On every path: the right state and reason, and nothing left behind."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pycdlib
import pytest

from metadata_server.errors import InvalidInput, MetadataError, NotFound, Unavailable
from metadata_server.iso.directory import IsoDirectory, IsoStoreError
from metadata_server.iso.provision import ProvisionConflict
from metadata_server.model import State
from metadata_server.xen.errors import (
    GuestGone,
    GuestReportedFailure,
    GuestSignalTimeout,
    XenCommandFailed,
)
from tests.iso.conftest import World, make_provisioner
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.xen_standins import tool, xl_standin_command

MAC = mac_of(1)
OTHER = mac_of(2)
KEY = "data/metadata-init"


def read_nonce(device: str) -> str:
    """What the guest does first: read metadata-init.txt from its CD-ROM."""
    image = pycdlib.PyCdlib()
    with open(device, "rb") as disk:
        image.open_fp(disk)
        out = io.BytesIO()
        image.get_file_from_iso_fp(out, rr_path="/metadata-init.txt")
        image.close()
    [line] = [line for line in out.getvalue().decode().splitlines() if line.startswith("nonce ")]
    return line.split(" ", 1)[1]


async def guest_writes(world: World, domid: int, key: str, value: str) -> int:
    """`xenstore-write KEY VALUE` run as domain `domid`; its exit status."""
    result = await asyncio.to_thread(
        tool, world.xenstored, "xenstore-write", key, value, domid=domid
    )
    return result.returncode


async def registered(world: World, mac: str = MAC, n: int = 1, domid: int | None = 5) -> None:
    await world.registry.put(mac, guest_body(n))
    if domid is not None:
        world.vif(domid, mac)


async def failed_with(world: World, *words: str, mac: str = MAC) -> None:
    vm = await world.registry.get(mac)
    assert vm.state is State.FAILED, vm.state
    assert vm.message is not None and vm.message.startswith("ISO fallback: ")
    for word in words:
        assert word in vm.message, vm.message


# --- the guest ------------------------------------------------------------------------


async def test_right_nonce_configures(world: World) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC))
    device = await world.attached(5)
    assert await guest_writes(world, 5, f"{KEY}/done", read_nonce(device)) == 0
    result = await asyncio.wait_for(flow, 10)
    assert result.vm.state is State.CONFIGURED and result.domid == 5
    assert (await world.registry.get(MAC)).state is State.CONFIGURED
    world.assert_nothing_left()


async def test_guest_that_never_answers(world: World) -> None:
    await registered(world)
    with pytest.raises(GuestSignalTimeout):
        await world.provisioner.provision(MAC, timeout=1)
    await failed_with(world, "domain 5 did not signal", "within 1 s")
    world.assert_nothing_left()


async def test_guest_that_dies(world: World) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC, timeout=10))
    await world.attached(5)
    await asyncio.to_thread(world.xenstored.release, 5)
    with pytest.raises(GuestGone):
        await asyncio.wait_for(flow, 10)
    await failed_with(world, "domain 5 died or was destroyed")
    world.assert_nothing_left()


@pytest.mark.parametrize(
    ("writer", "key", "value", "status"),
    [
        (5, f"{KEY}/done", "0" * 32, 0),
        (5, f"{KEY}/done", "NONCE-", 0),
        (5, f"{KEY}/failed", "0" * 32 + " not our nonce", 0),
        (6, f"/local/domain/5/{KEY}/done", "NONCE", 1),
        (6, f"/local/domain/5/{KEY}/failed", "NONCE forged", 1),
        (6, f"/local/domain/5/{KEY}", "NONCE", 1),
    ],
    ids=[
        "wrong-nonce",
        "nonce-with-suffix",
        "failed-wrong-nonce",
        "other-domain-done",
        "other-domain-failed",
        "other-domain-key",
    ],
)
async def test_wrong_nonces_and_other_domains_do_not_end_the_wait(
    world: World, writer: int, key: str, value: str, status: int
) -> None:
    await registered(world)
    world.vif(6, OTHER)
    flow = asyncio.create_task(world.provisioner.provision(MAC, timeout=1))
    nonce = read_nonce(await world.attached(5))
    assert await guest_writes(world, writer, key, value.replace("NONCE", nonce)) == status
    with pytest.raises(GuestSignalTimeout):  # the wait went on to its end
        await asyncio.wait_for(flow, 10)
    await failed_with(world, "did not signal")
    world.assert_nothing_left()


async def test_guest_reports_its_failure(world: World) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC))
    nonce = read_nonce(await world.attached(5))
    assert await guest_writes(world, 5, f"{KEY}/failed", f"{nonce} chpasswd failed") == 0
    with pytest.raises(GuestReportedFailure):
        await asyncio.wait_for(flow, 10)
    await failed_with(world, "domain 5 reported a failure: chpasswd failed")
    vm = await world.registry.get(MAC)
    assert vm.message is not None and nonce not in vm.message
    world.assert_nothing_left()


async def test_guest_reporting_over_the_network_ends_the_wait(world: World) -> None:
    """It reached the guest API after all: its own report stands."""
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC, timeout=10))
    await world.attached(5)
    await world.until(MAC, State.FETCHED)
    await world.registry.set_state(MAC, State.CONFIGURED, "applied")  # its POST /v1/status
    result = await asyncio.wait_for(flow, 5)
    assert result.detail == "the guest reported over the network"
    vm = await world.registry.get(MAC)
    assert (vm.state, vm.message) == (State.CONFIGURED, "applied")
    world.assert_nothing_left()


@pytest.mark.parametrize("change", ["rearm", "delete"])
async def test_rearm_or_delete_during_the_wait(world: World, change: str) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC, timeout=10))
    await world.attached(5)
    await world.until(MAC, State.FETCHED)
    if change == "rearm":
        await world.registry.rearm(MAC)
        with pytest.raises(ProvisionConflict, match="re-armed"):
            await asyncio.wait_for(flow, 5)
        assert (await world.registry.get(MAC)).state is State.REGISTERED
    else:
        await world.registry.delete(MAC)
        with pytest.raises(NotFound, match="deleted"):
            await asyncio.wait_for(flow, 5)
    world.assert_nothing_left()


# --- Dom0 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xl_command", "words"),
    [
        (("/nonexistent/xl",), ["/nonexistent/xl block-attach 5", "could not be run"]),
        (
            (sys.executable, "-c", "import sys; sys.exit('xl: libxl: error: no blkback')"),
            ["block-attach 5", "exit 1", "no blkback"],
        ),
        ((sys.executable, "-c", "import time; time.sleep(30)"), ["timed out after 1 s"]),
    ],
    ids=["missing", "failing", "hanging"],
)
async def test_xl_missing_failing_or_hanging(
    world: World, xl_command: tuple[str, ...], words: list[str]
) -> None:
    _, provisioner = make_provisioner(
        world.service, world.xenstored, xl_command, world.iso_dir, command_timeout=1
    )
    await registered(world)
    with pytest.raises(XenCommandFailed):
        await provisioner.provision(MAC)
    await failed_with(world, *words)
    world.assert_nothing_left()


@pytest.fixture
def small_mount(short_tmp: Path) -> Iterator[Path]:
    """A mount point for tiny tmpfs file systems; unmounted afterwards."""
    need_tools("mount", "umount")
    point = short_tmp / "isofs"
    point.mkdir()
    yield point
    subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10)


@pytest.mark.parametrize(
    ("options", "words"),
    [("ro,size=1m", "read-only"), ("size=16k", "no space left")],
    ids=["read-only", "full"],
)
async def test_unwritable_or_full_iso_directory(
    world: World, small_mount: Path, options: str, words: str
) -> None:
    iso_dir = small_mount / "iso"
    if options.startswith("ro"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "t", str(small_mount)], check=True)
        iso_dir.mkdir(mode=0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    else:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "t", str(small_mount)], check=True)
    _, provisioner = make_provisioner(
        world.service, world.xenstored, xl_standin_command(world.xl_state), iso_dir
    )
    await registered(world)
    with pytest.raises(IsoStoreError):
        await provisioner.provision(MAC)
    await failed_with(world, "cannot write the ISO", words)
    assert not any(iso_dir.iterdir())
    assert world.xl_calls() == []  # nothing was attached
    world.assert_nothing_left()


@pytest.mark.parametrize(
    ("domid", "vif_domid", "words"),
    [
        (None, None, "no running domain has a vif with MAC"),
        (9, None, "domain 9 does not exist"),
        (6, 5, "is on a vif of domain 5, not of domain 6"),
    ],
    ids=["no-vif", "no-such-domain", "someone-elses-domain"],
)
async def test_no_or_wrong_domain(
    world: World, domid: int | None, vif_domid: int | None, words: str
) -> None:
    await registered(world, domid=vif_domid)
    with pytest.raises(MetadataError):
        await world.provisioner.provision(MAC, domid=domid)
    await failed_with(world, words)
    world.assert_nothing_left()
    assert world.xl_calls() == []


async def test_a_given_domid_without_a_vif_is_trusted(world: World) -> None:
    await registered(world, domid=None)
    flow = asyncio.create_task(world.provisioner.provision(MAC, domid=6))
    device = await world.attached(6)
    assert await guest_writes(world, 6, f"{KEY}/done", read_nonce(device)) == 0
    assert (await asyncio.wait_for(flow, 10)).domid == 6
    world.assert_nothing_left()


@pytest.mark.parametrize(
    ("mac", "arguments", "error"),
    [
        ("02:00:c6:12:00:63", {}, NotFound),
        ("not-a-mac", {}, InvalidInput),
        (MAC, {"timeout": 0}, InvalidInput),
        (MAC, {"timeout": 3601}, InvalidInput),
        (MAC, {"timeout": "soon"}, InvalidInput),
        (MAC, {"domid": 0}, InvalidInput),
        (MAC, {"domid": True}, InvalidInput),
        (MAC, {"domid": 32752}, InvalidInput),
        (MAC, {"layout": "udf"}, InvalidInput),
    ],
    ids=[
        "unknown-mac",
        "bad-mac",
        "zero-timeout",
        "long-timeout",
        "text-timeout",
        "dom0",
        "bool-domid",
        "reserved-domid",
        "bad-layout",
    ],
)
async def test_bad_input_changes_nothing(
    world: World, mac: str, arguments: dict[str, object], error: type[Exception]
) -> None:
    await registered(world)
    before = await world.registry.get(MAC)
    with pytest.raises(error):
        await world.provisioner.provision(mac, **arguments)
    assert await world.registry.get(MAC) == before
    world.assert_nothing_left()
    assert world.xl_calls() == []


async def test_one_flow_per_guest_and_none_for_a_configured_one(world: World) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC))
    device = await world.attached(5)
    with pytest.raises(ProvisionConflict, match="being provisioned already"):
        await world.provisioner.provision(MAC)
    assert await guest_writes(world, 5, f"{KEY}/done", read_nonce(device)) == 0
    await asyncio.wait_for(flow, 10)
    with pytest.raises(ProvisionConflict, match="re-arm it"):
        await world.provisioner.provision(MAC)
    assert (await world.registry.get(MAC)).state is State.CONFIGURED
    world.assert_nothing_left()


async def test_server_shutdown_cuts_the_flow_and_cleans_up(world: World) -> None:
    await registered(world)
    flow = asyncio.create_task(world.provisioner.provision(MAC, timeout=30))
    await world.attached(5)
    await world.provisioner.close()
    with pytest.raises(Unavailable, match="shut down"):
        await asyncio.wait_for(flow, 5)
    await failed_with(world, "the server shut down")
    with pytest.raises(Unavailable, match="shutting down"):
        await world.provisioner.provision(MAC)
    world.assert_nothing_left()
    assert [call[0] for call in world.xl_calls()] == ["block-attach", "block-detach"]


async def test_http_client_going_away_does_not_stop_the_flow(world: World) -> None:
    await registered(world)
    caller = asyncio.create_task(world.provisioner.provision(MAC))
    device = await world.attached(5)
    caller.cancel()  # what aiohttp does to a handler whose client went away
    await asyncio.sleep(0.1)
    assert world.provisioner.running(MAC)
    assert await guest_writes(world, 5, f"{KEY}/done", read_nonce(device)) == 0
    await world.until(MAC, State.CONFIGURED)
    await asyncio.sleep(0.1)
    world.assert_nothing_left()


# --- after a crash --------------------------------------------------------------------


async def test_cleanup_leftovers_of_a_crash(world: World) -> None:
    """A server killed mid-flow left: an ISO attached to domain 5 and its keys, a partial
    ISO, and keys of domain 6 without any ISO. The next start removes all of it, and
    nothing that is not its own."""
    await registered(world)
    world.vif(6, OTHER)
    isos = IsoDirectory(world.iso_dir)
    iso = isos.write(5, MAC, b"\0" * 4096)
    await world.host.prepare_signal(5)
    await world.host.attach_iso(5, str(iso))
    partial = world.iso_dir / "6-02-00-c6-12-00-02.iso.part"
    partial.write_bytes(b"\0")
    await world.host.prepare_signal(6)
    (world.iso_dir / "notes.txt").write_text("not an ISO")

    report = await world.provisioner.cleanup_leftovers()

    assert sorted(report.isos) == sorted([partial.name, iso.name])
    assert report.detached == [5]
    assert report.keys == [6]  # 5's went with the detach
    assert sorted(p.name for p in world.iso_dir.iterdir()) == ["notes.txt"]
    (world.iso_dir / "notes.txt").unlink()
    world.assert_nothing_left()
    assert world.xl_calls()[-1] == ["block-detach", "5", "xvdd"]
    # a second start finds nothing
    again = await world.provisioner.cleanup_leftovers()
    assert (again.isos, again.detached, again.keys) == ([], [], [])


async def test_leftover_iso_of_a_domain_that_is_gone(world: World) -> None:
    await registered(world)
    IsoDirectory(world.iso_dir).write(7, MAC, b"\0")  # domain 7 no longer exists
    report = await world.provisioner.cleanup_leftovers()
    assert report.isos == [f"7-{MAC.replace(':', '-')}.iso"] and report.detached == []
    assert world.xl_calls() == []
    world.assert_nothing_left()
