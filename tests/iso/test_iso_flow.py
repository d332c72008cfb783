"""The whole ISO fallback in one test, with the real guest boot script.

Dom0 side: the Provisioner builds the guest's ISO, writes it (0600, in a 0700
directory), creates the signal key in the stand-in xenstored (driven by the real
xenstore-utils), and attaches the ISO with the xl stand-in, which makes the attach real
with a read-only loop device. Guest side: guest_init/metadata-init runs in a busybox
root (tests/support/rootfs.py) that holds that loop device, the real `xenstore-write`
(copied with its shared libraries) and, where this kernel has no iso9660, the
`mount.iso9660` stand-in (tests/support/isomount.py); its XENSTORED_PATH is domain 5's
own socket. It finds the disk by label, mounts it read-only, copies it, unmounts it and
writes the nonce back; Dom0 sees it, detaches, and removes the ISO and the keys; the
guest's state is `configured`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata_server.iso.provision import ProvisionResult
from metadata_server.model import State
from metadata_server.xen.errors import GuestReportedFailure
from tests.guest_init.conftest import MAC, Guest, install, key_id, loopback_guest
from tests.iso.conftest import World
from tests.support.isomount import install_iso9660_standin
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.rootfs import build_rootfs, shared_libraries
from tests.support.xen_standins import ServerThread

XENSTORED_IN_GUEST = "/run/xenstored/domain-5.sock"
XENSTORE_WRITE = "/usr/bin/xenstore-write"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port with nobody listening: the guest's network path fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port


@pytest.fixture
@root_fixture
def guest(short_tmp: Path, xenstored: ServerThread) -> Guest:
    """Guest 5: a busybox root with metadata-init installed, the real xenstore-write, and
    domain 5's xenstored socket (a hard link: the guest sees no other domain's socket)."""
    need_root()
    need_tools("unshare", "chroot", "busybox", "ldd", XENSTORE_WRITE)
    rootfs = build_rootfs(short_tmp / "guest")
    install(rootfs)
    rootfs.add_binary(XENSTORE_WRITE)
    for library in shared_libraries(XENSTORE_WRITE):  # what ldd says it needs
        assert rootfs.file(library).exists(), library
    install_iso9660_standin(rootfs)
    link = rootfs.file(XENSTORED_IN_GUEST)
    link.parent.mkdir(parents=True, exist_ok=True)
    os.link(xenstored.socket(5), link)
    guest = Guest(rootfs)
    guest.set_identity()
    return guest


async def _start_flow(world: World, **overrides: object) -> asyncio.Task[ProvisionResult]:
    assert mac_of(1) == MAC
    await world.registry.put(MAC, loopback_guest(**overrides))
    world.vif(5, MAC)
    world.vif(6, mac_of(2))
    return asyncio.create_task(world.provisioner.provision(MAC, timeout=30))


@pytest.mark.parametrize("how", ["iso-flag", "network-down"])
async def test_whole_flow_with_the_real_guest_script(
    world: World, guest: Guest, closed_port: int, how: str
) -> None:
    flow = await _start_flow(world, hostname="fromiso", user_data="#!/bin/sh\necho hi\n")
    try:
        device = await world.attached(5)
        await world.until(MAC, State.FETCHED)
        [iso] = list(world.iso_dir.iterdir())
        assert stat.S_IMODE(world.iso_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(iso.stat().st_mode) == 0o600
        assert world.signal_exists(5)

        args: tuple[str, ...] = ("--iso",)
        if how == "network-down":
            args = ()
            guest.configure(
                metadata_url=f"http://127.0.0.1:{closed_port}", timeout=1, retry_total=1
            )
        boot = await guest.boot(
            *args, block_devices=[device], env={"XENSTORED_PATH": XENSTORED_IN_GUEST}
        )
        result = await asyncio.wait_for(flow, 20)
    finally:
        flow.cancel()

    log = guest.log()
    assert boot.returncode == 0, log + boot.stderr
    assert f"read the configuration from {device}" in log
    if how == "network-down":
        assert "looking for a configuration disk" in log
    assert "xenstore-write" not in log  # neither "not found" nor "failed"
    assert boot.hostname == "fromiso"
    assert guest.shadow_hash() == SAMPLE_HASH
    assert [
        key_id(line) for line in guest.rootfs.read("/root/.ssh/authorized_keys").split("\n") if line
    ] == [key_id(SAMPLE_KEY)]
    assert boot.mounts == 0  # the guest unmounted the disk

    vm = await world.registry.get(MAC)
    assert guest.state()["instance_id"] == vm.instance_id
    assert vm.state is State.CONFIGURED and result.vm.state is State.CONFIGURED
    assert vm.message == "configured from the ISO on domain 5"
    assert State.FETCHED.value in vm.state_times
    assert world.xl_calls() == [
        ["block-attach", "5", f"format=raw, vdev=xvdd, access=ro, devtype=cdrom, target={iso}"],
        ["block-detach", "5", "xvdd"],
    ]
    world.assert_nothing_left()


async def test_guest_script_reports_its_failure(world: World, guest: Guest) -> None:
    """The script cannot apply its configuration (static networking, but this guest has
    no ifupdown or networkd): it writes `failed` with the nonce and its reason."""
    flow = await _start_flow(world, hostname="fromiso")
    try:
        device = await world.attached(5)
        guest.configure(network_mode="static")
        boot = await guest.boot(
            "--iso", block_devices=[device], env={"XENSTORED_PATH": XENSTORED_IN_GUEST}
        )
        with pytest.raises(GuestReportedFailure) as caught:
            await asyncio.wait_for(flow, 20)
    finally:
        flow.cancel()
    assert boot.returncode == 1
    assert "static network configuration" in caught.value.reason
    vm = await world.registry.get(MAC)
    assert vm.state is State.FAILED
    assert vm.message is not None and "static network configuration" in vm.message
    world.assert_nothing_left()
