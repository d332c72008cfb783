"""The shared guest image: a read-only lower tree, each guest's writes in its own upper
directory, host directories bound in; the mounts exist only inside the guest."""

from __future__ import annotations

from pathlib import Path

import pytest
from metadata_server_testbed.compare.rootfs import Overlay, build_rootfs

from tests.support.requirements import need_root, need_tools


@pytest.mark.root
def test_overlay_and_binds_stay_inside_the_guest(tmp_path: Path) -> None:
    need_root()
    need_tools("unshare", "chroot", "busybox", "ldd")
    image = build_rootfs(tmp_path / "image")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("hello\n")
    guests = [Overlay.under(tmp_path / f"guest{n}") for n in (1, 2)]
    for n, overlay in enumerate(guests, 1):
        result = image.run(
            [
                "/bin/sh",
                "-c",
                f"echo guest{n} > /etc/hostname && cat /run/host/from-host && echo made > /run/host/by-guest{n}",
            ],
            overlay=overlay,
            binds=[(shared, "/run/host")],
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello\n"
        assert overlay.file("/etc/hostname").read_text() == f"guest{n}\n"
    assert image.read("/etc/hostname") == "template\n"  # the image is untouched
    assert sorted(p.name for p in shared.iterdir()) == ["by-guest1", "by-guest2", "from-host"]
    with open("/proc/self/mountinfo") as mounts:
        assert str(tmp_path) not in mounts.read()  # nothing mounted outside the guests
