"""The Xen adapter against the stand-in xenstored and the xl stand-in: the exact xl argv,
a real read-only loop device for the ISO, the guest's signal (played by the real
xenstore-write on the guest's socket), guest death, timeouts, and domid lookup."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from metadata_server.errors import InvalidInput
from metadata_server.xen.commands import run_command
from metadata_server.xen.errors import (
    GuestGone,
    GuestReportedFailure,
    GuestSignalTimeout,
    XenCommandFailed,
    XenError,
)
from metadata_server.xen.host import XenHost, XenSettings, new_nonce
from metadata_server.xen.vifs import domain_has_mac
from tests.support.requirements import need_tools
from tests.support.xen_standins import (
    XENSTORE_TOOLS,
    ServerThread,
    ok,
    tool,
    xl_standin_command,
)

SIGNAL = "/local/domain/5/data/metadata-init"


def make_host(server: ServerThread, xl_command: tuple[str, ...], timeout: float = 10) -> XenHost:
    return XenHost(
        XenSettings(
            xl_command=xl_command,
            xenstored_path=str(server.socket()),
            command_timeout=timeout,
        )
    )


@pytest.fixture
def host(xenstored: ServerThread, xl_state: Path) -> XenHost:
    return make_host(xenstored, xl_standin_command(xl_state, "--no-loop"))


async def guest_write(server: ServerThread, domid: int, key: str, value: str) -> int:
    """The guest boot script's line, run as domain `domid`: returns the exit status."""
    result = await asyncio.to_thread(tool, server, "xenstore-write", key, value, domid=domid)
    return result.returncode


def xl_log(state: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state / "xl-argv.log").read_text().splitlines()]


def loop_backing(device: str) -> tuple[str, bool]:
    """(backing file, read-only) of a loop device, from losetup."""
    out = subprocess.run(
        ["losetup", "--json", "-O", "BACK-FILE,RO", device],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    [entry] = json.loads(out)["loopdevices"]
    return entry["back-file"], entry["ro"] in (True, 1, "1")


# --- attach and detach ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.iso", "with, comma.iso"], ids=["plain", "comma"])
async def test_attach_and_detach_argv_and_loop_device(
    xenstored: ServerThread, xl_state: Path, short_tmp: Path, loop_devices: None, name: str
) -> None:
    iso = short_tmp / name
    iso.write_bytes(b"\0" * 65536)
    host = make_host(xenstored, xl_standin_command(xl_state))
    await host.prepare_signal(5)
    await host.attach_iso(5, str(iso))

    record = xl_state / "devices" / "5" / "xvdd"
    device = record.read_text().strip()
    assert device.startswith("/dev/loop")
    assert loop_backing(device) == (str(iso), True)

    await host.detach_iso(5)
    assert xl_log(xl_state) == [
        ["block-attach", "5", f"format=raw, vdev=xvdd, access=ro, devtype=cdrom, target={iso}"],
        ["block-detach", "5", "xvdd"],
    ]
    assert not record.exists()
    gone = subprocess.run(["losetup", "-j", str(iso)], capture_output=True, text=True, timeout=10)
    assert gone.stdout == ""
    assert tool(xenstored, "xenstore-exists", SIGNAL).returncode == 1  # keys removed


async def test_vdev_is_configurable(xenstored: ServerThread, xl_state: Path) -> None:
    settings = XenSettings(
        xl_command=xl_standin_command(xl_state, "--no-loop"),
        xenstored_path=str(xenstored.socket()),
        vdev="xvde",
    )
    host = XenHost(settings)
    await host.attach_iso(6, "/srv/iso/6.iso")
    await host.detach_iso(6)
    assert xl_log(xl_state) == [
        [
            "block-attach",
            "6",
            "format=raw, vdev=xvde, access=ro, devtype=cdrom, target=/srv/iso/6.iso",
        ],
        ["block-detach", "6", "xvde"],
    ]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ("attach-unknown-domain", ["block-attach 9", "Non-existant domain"]),
        ("detach-not-attached", ["block-detach 5 xvdd", "Device xvdd not connected"]),
        ("attach-twice", ["block-attach 5", "already exists"]),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_xl_failures_name_the_command_and_its_stderr(
    host: XenHost, call: str, words: list[str]
) -> None:
    if call == "attach-twice":
        await host.attach_iso(5, "/srv/iso/5.iso")
    failing = {
        "attach-unknown-domain": lambda: host.attach_iso(9, "/srv/iso/9.iso"),
        "detach-not-attached": lambda: host.detach_iso(5),
    }.get(call, lambda: host.attach_iso(5, "/srv/iso/5.iso"))
    with pytest.raises(XenCommandFailed) as caught:
        await failing()
    assert caught.value.returncode == 1
    for word in words:
        assert word in caught.value.detail


@pytest.mark.parametrize(
    ("xl_command", "words"),
    [
        (("/nonexistent/xl",), ["could not be run"]),
        ((sys.executable, "-c", "import time; time.sleep(30)"), ["timed out after 0.5 s"]),
    ],
    ids=["missing-xl", "hanging-xl"],
)
async def test_xl_that_cannot_run_or_hangs(
    xenstored: ServerThread, xl_command: tuple[str, ...], words: list[str]
) -> None:
    host = make_host(xenstored, xl_command, timeout=0.5)
    with pytest.raises(XenCommandFailed) as caught:
        await host.attach_iso(5, "/srv/iso/5.iso")
    for word in words:
        assert word in caught.value.detail


@pytest.mark.parametrize(
    ("domid", "path"),
    [(0, "/x.iso"), (32752, "/x.iso"), (5, "relative.iso"), (5, "/bad\nname.iso")],
    ids=["dom0", "reserved", "relative-path", "newline"],
)
async def test_attach_refuses_bad_arguments(host: XenHost, domid: int, path: str) -> None:
    with pytest.raises(InvalidInput):
        await host.attach_iso(domid, path)


# --- the signal -----------------------------------------------------------------------


async def test_prepared_key_lets_only_that_guest_write(
    xenstored: ServerThread, host: XenHost
) -> None:
    await host.prepare_signal(5)
    assert ok(xenstored, "xenstore-ls", "-p", "/local/domain/5/data").split("(")[1] == "n0,w5)\n"
    assert await guest_write(xenstored, 5, "data/metadata-init/done", "x") == 0
    assert await guest_write(xenstored, 6, f"{SIGNAL}/done", "x") == 1
    assert await guest_write(xenstored, 6, SIGNAL, "x") == 1
    assert tool(xenstored, "xenstore-read", "data/metadata-init", domid=5).returncode == 1
    chmod = tool(xenstored, "xenstore-chmod", "data/metadata-init", "n5", domid=5)
    assert chmod.returncode == 1


async def test_prepare_refuses_a_missing_domain(host: XenHost) -> None:
    with pytest.raises(XenError, match="domain 9 does not exist"):
        await host.prepare_signal(9)


async def test_right_nonce_ends_the_wait(xenstored: ServerThread, host: XenHost) -> None:
    nonce = new_nonce()
    await host.prepare_signal(5)
    waiting = asyncio.create_task(host.wait_for_signal(5, nonce, timeout=10))
    await asyncio.sleep(0.2)
    assert await guest_write(xenstored, 5, "data/metadata-init/done", nonce) == 0
    await asyncio.wait_for(waiting, 5)
    assert ok(xenstored, "xenstore-read", f"{SIGNAL}/done") == f"{nonce}\n"  # until detach


async def test_signal_written_before_the_wait_is_seen(
    xenstored: ServerThread, host: XenHost
) -> None:
    nonce = new_nonce()
    await host.prepare_signal(5)
    assert await guest_write(xenstored, 5, "data/metadata-init/done", nonce) == 0
    await host.wait_for_signal(5, nonce, timeout=5)


@pytest.mark.parametrize(
    ("writer", "key", "value"),
    [
        (5, "done", "0" * 32),
        (5, "done", "garbage"),
        (5, "failed", "0" * 32 + " not our nonce"),
        (5, "failed", "no nonce at all"),
        (6, "done", "NONCE"),
    ],
    ids=["wrong-nonce", "garbage", "failed-wrong-nonce", "failed-no-nonce", "other-domain"],
)
async def test_wrong_signals_are_ignored(
    xenstored: ServerThread,
    host: XenHost,
    caplog: pytest.LogCaptureFixture,
    writer: int,
    key: str,
    value: str,
) -> None:
    nonce = new_nonce()
    await host.prepare_signal(5)
    waiting = asyncio.create_task(host.wait_for_signal(5, nonce, timeout=10))
    try:
        await asyncio.sleep(0.2)
        path = f"{SIGNAL}/{key}" if writer != 5 else f"data/metadata-init/{key}"
        status = await guest_write(xenstored, writer, path, value.replace("NONCE", nonce))
        assert status == (1 if writer != 5 else 0)  # another domain is refused
        await asyncio.sleep(0.5)
        assert not waiting.done()  # still waiting
        if writer == 5:
            assert "without the expected nonce" in caplog.text
        assert await guest_write(xenstored, 5, "data/metadata-init/done", nonce) == 0
        await asyncio.wait_for(waiting, 5)
    finally:
        waiting.cancel()


async def test_failed_with_nonce_reports_the_reason(xenstored: ServerThread, host: XenHost) -> None:
    nonce = new_nonce()
    await host.prepare_signal(5)
    waiting = asyncio.create_task(host.wait_for_signal(5, nonce, timeout=10))
    await asyncio.sleep(0.2)
    reason = "chpasswd failed:\\x1b[31m bad hash"
    assert await guest_write(xenstored, 5, "data/metadata-init/failed", f"{nonce} {reason}") == 0
    with pytest.raises(GuestReportedFailure) as caught:
        await asyncio.wait_for(waiting, 5)
    assert caught.value.domid == 5
    assert caught.value.reason == "chpasswd failed: [31m bad hash"  # control chars replaced
    assert nonce not in caught.value.detail


async def test_guest_death_ends_the_wait(xenstored: ServerThread, host: XenHost) -> None:
    await host.prepare_signal(5)
    waiting = asyncio.create_task(host.wait_for_signal(5, new_nonce(), timeout=10))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(xenstored.release, 5)
    with pytest.raises(GuestGone, match="domain 5 died or was destroyed"):
        await asyncio.wait_for(waiting, 5)


async def test_another_guest_dying_does_not_end_the_wait(
    xenstored: ServerThread, host: XenHost
) -> None:
    nonce = new_nonce()
    await host.prepare_signal(5)
    waiting = asyncio.create_task(host.wait_for_signal(5, nonce, timeout=10))
    try:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(xenstored.release, 6)
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert await guest_write(xenstored, 5, "data/metadata-init/done", nonce) == 0
        await asyncio.wait_for(waiting, 5)
    finally:
        waiting.cancel()


async def test_timeout_ends_the_wait_and_removes_the_keys(
    xenstored: ServerThread, host: XenHost
) -> None:
    await host.prepare_signal(5)
    with pytest.raises(GuestSignalTimeout, match=r"domain 5 did not signal .* within 0.5 s"):
        await host.wait_for_signal(5, new_nonce(), timeout=0.5)
    assert tool(xenstored, "xenstore-exists", SIGNAL).returncode == 1
    assert tool(xenstored, "xenstore-exists", "/local/domain/5/data").returncode == 0


async def test_wait_leaves_no_watch_process(
    xenstored: ServerThread, host: XenHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await host.prepare_signal(5)
    with pytest.raises(GuestSignalTimeout):
        await host.wait_for_signal(5, new_nonce(), timeout=0.3)
    watchers = subprocess.run(
        ["pgrep", "-f", f"xenstore-watch {SIGNAL}"], capture_output=True, timeout=10
    )
    assert watchers.stdout == b""


async def test_bad_nonce_is_refused(host: XenHost) -> None:
    with pytest.raises(InvalidInput):
        await host.wait_for_signal(5, "short", timeout=1)


# --- domid lookup -----------------------------------------------------------------------


@pytest.fixture
def vifs(xenstored: ServerThread) -> ServerThread:
    backend = "/local/domain/0/backend/vif"
    ok(xenstored, "xenstore-write", f"{backend}/5/0/mac", "00:16:3e:00:00:05")
    ok(xenstored, "xenstore-write", f"{backend}/5/0/bridge", "xenbr0")
    ok(xenstored, "xenstore-write", f"{backend}/6/1/mac", "00:16:3E:00:00:06")
    return xenstored


@pytest.mark.parametrize(
    ("mac", "domid"),
    [
        ("00:16:3e:00:00:05", 5),
        ("00-16-3E-00-00-06", 6),
        ("00:16:3e:00:00:99", None),
    ],
    ids=["exact", "other-spelling", "unknown"],
)
async def test_domid_for_mac(
    vifs: ServerThread, host: XenHost, mac: str, domid: int | None
) -> None:
    assert await host.domid_for_mac(mac) == domid


async def test_domid_for_mac_without_any_vif(host: XenHost) -> None:
    assert await host.domid_for_mac("00:16:3e:00:00:05") is None


async def test_domid_for_mac_on_two_domains_is_an_error(vifs: ServerThread, host: XenHost) -> None:
    ok(vifs, "xenstore-write", "/local/domain/0/backend/vif/6/2/mac", "00:16:3e:00:00:05")
    with pytest.raises(XenError, match=r"several domains: \[5, 6\]"):
        await host.domid_for_mac("00:16:3e:00:00:05")


@pytest.mark.parametrize(
    ("domid", "mac", "carries"),
    [
        (5, "00:16:3e:00:00:05", True),
        (6, "00:16:3e:00:00:06", True),  # xenstore spells it in upper case
        (6, "00:16:3e:00:00:05", False),  # another domain's MAC
        (7, "00:16:3e:00:00:05", False),  # no such domain
    ],
    ids=["own", "other-spelling", "another-domains-mac", "no-domain"],
)
async def test_domain_has_mac_reads_one_domain(
    vifs: ServerThread, host: XenHost, domid: int, mac: str, carries: bool
) -> None:
    assert await domain_has_mac(host, domid, mac) is carries


async def test_domid_for_mac_refuses_a_bad_mac(host: XenHost) -> None:
    with pytest.raises(InvalidInput):
        await host.domid_for_mac("not-a-mac")


# --- xenstored out of reach -------------------------------------------------------------


async def test_unreachable_xenstored_is_a_clear_error(short_tmp: Path) -> None:
    need_tools(*XENSTORE_TOOLS)
    host = XenHost(XenSettings(xenstored_path=str(short_tmp / "no-socket")))
    with pytest.raises(XenCommandFailed, match=r"xenstore-exists.*xs_open"):
        await host.prepare_signal(5)
    with pytest.raises(XenCommandFailed, match=r"xenstore-ls.*xs_open"):
        await host.domid_for_mac("00:16:3e:00:00:05")
    async with host.xenstore.watch(SIGNAL) as watch:
        with pytest.raises(XenCommandFailed, match=r"xenstore-watch.*stopped.*xs_open"):
            await watch.next_event()


async def test_xenstore_tools_round_trip(xenstored: ServerThread, host: XenHost) -> None:
    tools = host.xenstore
    await tools.write("/rt/key", "a value\\with backslash")
    assert await tools.read("/rt/key") == "a value\\with backslash"
    assert await tools.list_values("/rt") == {"/rt/key": "a value\\with backslash"}
    assert await tools.read("/rt/missing") is None
    assert await tools.exists("/rt/key")
    await tools.rm("/rt")
    assert not await tools.exists("/rt")


# --- commands wait for a slot -------------------------------------------------------------


async def test_commands_queue_for_slots_and_time_out_only_while_running(tmp_path: Path) -> None:
    """One slot: four commands that would collide (each holds a directory while it runs)
    run one after the other, and each gets its whole timeout once it starts, however long
    it waited (a queued command is not a slow one)."""
    held = tmp_path / "held"
    argv = ["sh", "-c", f"mkdir {held} || exit 3; sleep 0.2; rmdir {held}"]
    slots = asyncio.Semaphore(1)
    results = await asyncio.gather(*(run_command(argv, timeout=0.5, slots=slots) for _ in range(4)))
    assert [r.returncode for r in results] == [0, 0, 0, 0]


def test_parallel_commands_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="parallel_commands must be at least 1"):
        XenSettings(parallel_commands=0)
