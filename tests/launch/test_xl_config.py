"""The xl domain config a launch writes: PV, the qcow2 delta on qdisk as xvda, the vif
with the guest's MAC on the bridge, a fixed uuid; pvgrub2 or a direct kernel; values
that would break out of their strings refused; the kernel chosen and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from metadata_server.errors import InvalidInput
from metadata_server.launch.boot import Boot, choose_boot, root_device
from metadata_server.launch.errors import ToolMissing
from metadata_server.launch.xl_config import DomainConfig, render

UUID = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"


def config(boot: Boot, **changes: str) -> DomainConfig:
    values = {"delta": "/var/lib/metadata-server/launched/web1/disk.qcow2", "bridge": "xenbr0"}
    values.update(changes)
    return DomainConfig(
        name="web1",
        uuid=UUID,
        memory=512,
        vcpus=2,
        boot=boot,
        mac="00:16:3e:12:34:56",
        **values,
    )


def test_a_pvgrub2_guest() -> None:
    text = render(config(Boot(kernel="/usr/lib/grub-xen/grub-x86_64-xen.bin")))
    lines = text.splitlines()
    for line in (
        'name = "web1"',
        'type = "pv"',
        f'uuid = "{UUID}"',
        "memory = 512",
        "vcpus = 2",
        'kernel = "/usr/lib/grub-xen/grub-x86_64-xen.bin"',
        "disk = [ 'format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, "
        "target=/var/lib/metadata-server/launched/web1/disk.qcow2' ]",
        "vif = [ 'mac=00:16:3e:12:34:56, bridge=xenbr0' ]",
    ):
        assert line in lines
    assert not any(line.startswith(("ramdisk", "extra")) for line in lines)


def test_a_direct_kernel_guest() -> None:
    boot = Boot(kernel="/srv/vmlinuz", ramdisk="/srv/initrd.img", extra="root=/dev/xvda ro")
    lines = render(config(boot)).splitlines()
    assert 'ramdisk = "/srv/initrd.img"' in lines
    assert 'extra = "root=/dev/xvda ro"' in lines


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"delta": "/tmp/a'b"}, id="quote-in-path"),
        pytest.param({"delta": "/tmp/a\nb"}, id="newline-in-path"),
        pytest.param({"bridge": "br0,x"}, id="comma-in-bridge"),
    ],
)
def test_values_that_would_break_out_are_refused(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cannot"):
        render(config(Boot(kernel="/k"), **changes))


@pytest.mark.parametrize(
    ("root", "device"),
    [("the whole disk (ext4)", "/dev/xvda"), ("partition 2 (ext4)", "/dev/xvda2")],
)
def test_the_root_device_from_the_masters_record(root: str, device: str) -> None:
    assert root_device(root) == device


def test_pvgrub2_missing_is_named_with_its_package(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="grub-xen-bin"):
        choose_boot(None, None, root="the whole disk", pvgrub=tmp_path / "none.bin")


def test_a_kernel_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a readable file") as caught:
        choose_boot(str(tmp_path / "vmlinuz"), None, root="the whole disk")
    assert caught.value.field == "kernel"


def test_a_given_kernel_boots_directly(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    boot = choose_boot(str(kernel), None, root="partition 1 (ext4)")
    assert boot == Boot(kernel=str(kernel), extra="root=/dev/xvda1 ro console=hvc0")
