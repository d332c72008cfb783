"""metadata-init against the real server, chrooted in a busybox guest, under each shell.

Variants: busybox ash + busybox wget + direct /etc/shadow edit (no chpasswd); dash + busybox
wget + chpasswd + ifupdown static config; bash + curl + chpasswd + networkd static config;
dash + GNU wget + direct /etc/shadow edit.

One guest goes through its life: first boot (everything applied, `configured` recorded),
a later boot (no change, not a single connection), `--ask` without and with an admin
re-arm, and clones (new domain UUID, new MAC) that configure themselves again.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable

import pytest

from metadata_server.app import MetadataService
from metadata_server.model import State
from tests.guest_init.conftest import (
    MAC,
    UUID,
    Guest,
    connections,
    ed25519_key,
    guest_url,
    key_id,
    loopback_guest,
)
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY

OLD_KEY = ed25519_key(1, "kept@template")
NEW_KEY = ed25519_key(2, "new@admin")
USER_DATA = "#!/bin/sh\n# user-data-marker\ntouch /tmp/user-data-ran\n"
HOSTILE_METADATA = {"note": "$(touch /tmp/pwned) `touch /tmp/pwned`; touch /tmp/pwned"}
# variant → (/bin/sh, host programs added to busybox, network layout for network_mode=static)
VARIANTS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "busybox": ("busybox", (), None),  # network_mode=dhcp: nothing is written
    "dash": ("dash", ("chpasswd",), "ifupdown"),
    "bash": ("bash", ("chpasswd", "curl"), "networkd"),
    "dash-gnu-wget": ("dash", ("wget",), None),
}


def prepare(guest: Guest, url: str, layout: str | None) -> None:
    guest.rootfs.write(
        "/root/.ssh/authorized_keys", f"{OLD_KEY}\n{SAMPLE_KEY} old-comment\n", mode=0o644
    )
    if layout == "ifupdown":
        guest.rootfs.write(
            "/etc/network/interfaces",
            "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n",
        )
    elif layout == "networkd":
        guest.rootfs.file("/etc/systemd/network").mkdir(parents=True)
    point(guest, url, layout)


def point(guest: Guest, url: str, layout: str | None) -> None:
    guest.configure(
        metadata_url=url,
        timeout=5,
        retry_total=2,
        run_user_data="yes",
        network_mode="dhcp" if layout is None else "static",
    )


async def state_of(service: MetadataService) -> State:
    assert service.registry is not None
    return (await service.registry.get(MAC)).state


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_guest_life(
    variant: str,
    service: MetadataService,
    make_guest: Callable[..., Guest],
    silent_listener: socket.socket,
) -> None:
    registry = service.registry
    assert registry is not None
    await registry.put(
        MAC,
        loopback_guest(
            ssh_keys=[SAMPLE_KEY, NEW_KEY], user_data=USER_DATA, metadata=HOSTILE_METADATA
        ),
    )
    vm = await registry.get(MAC)
    shell, binaries, layout = VARIANTS[variant]
    guest = make_guest(shell, binaries)
    prepare(guest, guest_url(service), layout)

    # First boot: everything is applied and reported.
    boot = await guest.boot()
    assert boot.returncode == 0, guest.log()
    assert boot.hostname == "guest1"
    assert guest.rootfs.read("/etc/hostname") == "guest1\n"
    hosts = guest.rootfs.read("/etc/hosts").splitlines()
    assert "127.0.1.1 guest1.example.test guest1" in hosts
    assert "127.0.0.1\tlocalhost" in hosts and "::1\tlocalhost" in hosts
    assert [h for h in hosts if h.startswith("127.0.1.1")] == [
        "127.0.1.1 guest1.example.test guest1"
    ]
    assert guest.shadow_hash() == SAMPLE_HASH
    assert stat.S_IMODE(os.stat(guest.rootfs.file("/etc/shadow")).st_mode) == 0o640
    keys_file = guest.rootfs.file("/root/.ssh/authorized_keys")
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    keys = keys_file.read_text().splitlines()
    assert [key_id(k) for k in keys] == [key_id(OLD_KEY), key_id(SAMPLE_KEY), key_id(NEW_KEY)]
    assert await state_of(service) is State.CONFIGURED
    assert guest.state() == {"instance_id": vm.instance_id, "uuid": UUID, "mac": MAC}
    assert guest.rootfs.file("/tmp/user-data-ran").exists()
    assert not guest.rootfs.file("/tmp/pwned").exists()
    saved = guest.rootfs.file("/var/lib/metadata-init/user-data")
    assert saved.read_text() == USER_DATA
    log_file = guest.rootfs.file("/var/log/metadata-init.log")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    log = guest.log()
    assert SAMPLE_HASH not in log and "user-data-marker" not in log
    assert SAMPLE_HASH not in guest.rootfs.read("/var/lib/metadata-init/config.txt")
    if layout == "ifupdown":
        assert guest.rootfs.read("/etc/network/interfaces.d/metadata-init") == (
            "auto eth0\niface eth0 inet static\n    address 127.0.0.1/8\n"
            "    dns-nameservers 198.18.0.1\n"
        )
    elif layout == "networkd":
        assert guest.rootfs.read("/etc/systemd/network/10-metadata-init.network") == (
            "[Match]\nName=eth0\n\n[Network]\nAddress=127.0.0.1/8\nDNS=198.18.0.1\n"
        )

    # Later boot: same identity, no change and not one connection (the URL is a listener
    # that never answers, so any attempt would show up in its backlog).
    before = guest.files()
    guest.configure(
        metadata_url=f"http://127.0.0.1:{silent_listener.getsockname()[1]}",
        timeout=1,
        retry_total=0,
    )
    boot = await guest.boot()
    assert boot.returncode == 0
    assert boot.hostname == "template"  # nothing set it in this boot's fresh UTS namespace
    assert guest.files() == before
    assert connections(silent_listener) == 0
    assert "nothing to do" in guest.log().splitlines()[-1]
    assert "result: configured" in guest.log()  # the first boot's lines are kept

    # --ask, nothing re-armed: the server is asked, the instance id is the same: no change.
    point(guest, guest_url(service), layout)
    boot = await guest.boot("--ask")
    assert boot.returncode == 0
    assert guest.files() == before
    assert "unchanged" in guest.log().splitlines()[-1]

    # --ask after the admin changed the hostname and re-armed the guest: configured again.
    await registry.put(MAC, loopback_guest(hostname="guest1b", ssh_keys=[SAMPLE_KEY, NEW_KEY]))
    rearmed = await registry.rearm(MAC)
    boot = await guest.boot("--ask")
    assert boot.returncode == 0, guest.log()
    assert boot.hostname == "guest1b"
    assert guest.rootfs.read("/etc/hostname") == "guest1b\n"
    assert guest.state()["instance_id"] == rearmed.instance_id != vm.instance_id
    assert await state_of(service) is State.CONFIGURED
    assert not guest.rootfs.file("/var/lib/metadata-init/user-data").exists()
    keys = guest.rootfs.read("/root/.ssh/authorized_keys").splitlines()
    assert [key_id(k) for k in keys] == [key_id(OLD_KEY), key_id(SAMPLE_KEY), key_id(NEW_KEY)]

    # A clone (new domain UUID, here through the METADATA_INIT_UUID override) configures
    # itself without being asked to; the secrets are withheld now, so the password stays.
    await registry.put(MAC, loopback_guest(hostname="guest1c"))
    guest.rootfs.write("/etc/clone-uuid", "0d5e3b44-8a55-4e0e-9f5e-6f7d7f0b2a10\n")
    clone = {"METADATA_INIT_UUID": "/etc/clone-uuid"}
    boot = await guest.boot(env=clone)
    assert boot.returncode == 0, guest.log()
    assert boot.hostname == "guest1c"
    assert guest.shadow_hash() == SAMPLE_HASH
    assert guest.state()["uuid"] == "0d5e3b44-8a55-4e0e-9f5e-6f7d7f0b2a10"

    # So does a clone with a new MAC on its primary interface.
    await registry.put(MAC, loopback_guest(hostname="guest1d"))
    guest.set_identity(mac="02:00:c6:12:99:99")
    boot = await guest.boot(env=clone)
    assert boot.returncode == 0, guest.log()
    assert boot.hostname == "guest1d"
    assert guest.state()["mac"] == "02:00:c6:12:99:99"
    assert "new machine identity" in guest.log()
