"""The configuration-disk fallback: the server is down, so the guest reads a disk image.

The image holds metadata-init.txt rendered by the server's own `config_text` (plus the
`nonce` line the ISO builder adds) and user-data, and is attached on a loop device. The
script finds it by label, mounts it read-only, applies it, unmounts it, and (xenstore-write
being absent in this guest) logs that Dom0 was not told.

The guest sees an iso9660 image from Dom0. Where the kernel lacks iso9660 (this test
machine's does), the guest's `mount -t iso9660` goes to a stand-in for the kernel driver
(tests/support/isomount.py, FUSE); the ext4 cases run the same discovery and read path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.documents import DocumentOptions, render_guest_document
from tests.guest_init.conftest import MAC, Guest, loopback_guest
from tests.support.isomount import install_iso9660_standin
from tests.support.records import SAMPLE_HASH
from tests.support.requirements import need_tools

NONCE = "n0nce-4f2a9c"
USER_DATA = "#!/bin/sh\ntouch /tmp/disk-user-data-ran\n"


def build_image(source: Path, image: Path, fstype: str, label: str) -> None:
    if fstype == "iso9660":
        tools = need_tools("genisoimage")
        argv = [
            tools["genisoimage"],
            "-quiet",
            "-V",
            label,
            "-r",
            "-J",
            "-o",
            str(image),
            str(source),
        ]
    else:
        tools = need_tools("mkfs.ext4")
        subprocess.run(["truncate", "-s", "4M", str(image)], check=True)
        argv = [tools["mkfs.ext4"], "-q", "-F", "-L", label, "-d", str(source), str(image)]
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def loop_device() -> Iterator[Callable[[Path], str]]:
    """attach(image) → /dev/loopN (read-only); every device is detached afterwards."""
    tools = need_tools("losetup")
    attached: list[str] = []

    def attach(image: Path) -> str:
        device = subprocess.run(
            [tools["losetup"], "--find", "--show", "--read-only", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        attached.append(device)
        return device

    yield attach
    for device in attached:
        subprocess.run([tools["losetup"], "--detach", device], check=False, capture_output=True)


@pytest.mark.parametrize(
    ("fstype", "label"),
    [("iso9660", "cidata"), ("ext4", "cidata"), ("ext4", "config-2")],
    ids=["iso9660-cidata", "ext4-cidata", "ext4-config-2"],
)
async def test_server_down_falls_back_to_the_disk(
    fstype: str,
    label: str,
    tmp_path: Path,
    service: MetadataService,
    make_guest: Callable[..., Guest],
    closed_port: int,
    loop_device: Callable[[Path], str],
) -> None:
    registry = service.registry
    assert registry is not None
    await registry.put(MAC, loopback_guest(hostname="fromdisk", user_data=USER_DATA))
    vm = await registry.get(MAC)
    text = render_guest_document(
        vm, DocumentOptions(default_domain=None, public_url="http://169.254.169.254")
    ).text_body.decode()
    assert text.endswith("end\n")
    source = tmp_path / "disk"
    source.mkdir()
    (source / "metadata-init.txt").write_text(text[: -len("end\n")] + f"nonce {NONCE}\nend\n")
    (source / "user-data").write_text(USER_DATA)
    image = tmp_path / f"config.{fstype}"
    build_image(source, image, fstype, label)
    device = loop_device(image)

    guest = make_guest("busybox")
    if fstype == "iso9660":
        install_iso9660_standin(guest.rootfs)
    guest.configure(
        metadata_url=f"http://127.0.0.1:{closed_port}",
        timeout=1,
        retry_total=1,
        run_user_data="yes",
    )
    boot = await guest.boot(block_devices=[device])
    log = guest.log()
    assert boot.returncode == 0, log
    assert boot.hostname == "fromdisk"
    assert guest.rootfs.read("/etc/hostname") == "fromdisk\n"
    assert guest.shadow_hash() == SAMPLE_HASH
    assert guest.state()["instance_id"] == vm.instance_id
    assert guest.rootfs.file("/tmp/disk-user-data-ran").exists()
    assert "no answer from" in log and f"read the configuration from {device}" in log
    assert "xenstore-write not found" in log
    assert SAMPLE_HASH not in log
    assert boot.mounts == 0  # unmounted again, seen from inside the guest's mount namespace


async def test_user_data_on_the_disk_larger_than_64k_is_refused(
    tmp_path: Path,
    service: MetadataService,
    make_guest: Callable[..., Guest],
    loop_device: Callable[[Path], str],
) -> None:
    """The disk's user-data is held to the network's limit: cut at 64 KiB, it would run."""
    registry = service.registry
    assert registry is not None
    await registry.put(MAC, loopback_guest(hostname="fromdisk"))
    vm = await registry.get(MAC)
    text = render_guest_document(
        vm, DocumentOptions(default_domain=None, public_url="http://169.254.169.254")
    ).text_body.decode()
    source = tmp_path / "disk"
    source.mkdir()
    (source / "metadata-init.txt").write_text(text[: -len("end\n")] + f"nonce {NONCE}\nend\n")
    (source / "user-data").write_text("#!/bin/sh\ntouch /tmp/cut-user-data-ran\n" + "#" * 70000)
    image = tmp_path / "config.ext4"
    build_image(source, image, "ext4", "cidata")
    guest = make_guest("busybox")
    before = guest.files()
    guest.configure(source="iso", run_user_data="yes")
    boot = await guest.boot(block_devices=[loop_device(image)])
    assert boot.returncode == 1, guest.log()
    assert "user-data is larger than 65536 bytes" in guest.log()
    assert guest.files() == before
    assert not guest.rootfs.file("/tmp/cut-user-data-ran").exists()
