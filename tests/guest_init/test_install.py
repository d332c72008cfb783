"""install.sh into an image directory, with systemd and without, and --uninstall again."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.guest_init.conftest import GUEST_INIT

RC_LOCAL = "#!/bin/sh -e\n# rc.local of the image\n/usr/local/bin/site-setup\nexit 0\n"
DHCLIENT_CONF = "request subnet-mask, routers;\n"


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(GUEST_INIT / "install.sh"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def image(tmp_path: Path, *, systemd: bool) -> Path:
    root = tmp_path / "image"
    (root / "etc/dhcp").mkdir(parents=True)
    (root / "etc/rc.local").write_text(RC_LOCAL)
    (root / "etc/dhcp/dhclient.conf").write_text(DHCLIENT_CONF)
    if systemd:
        (root / "usr/lib/systemd").mkdir(parents=True)
        (root / "usr/lib/systemd/systemd").write_text("")
    return root


@pytest.mark.parametrize("systemd", [True, False], ids=["systemd", "rc.local"])
def test_install_and_uninstall(tmp_path: Path, systemd: bool) -> None:
    root = image(tmp_path, systemd=systemd)
    result = install(root)
    assert result.returncode == 0, result.stderr

    script = root / "usr/sbin/metadata-init"
    assert script.read_bytes() == (GUEST_INIT / "metadata-init").read_bytes()
    assert mode(script) == 0o755
    assert mode(root / "usr/lib/metadata-init/dhcp-hook") == 0o755
    conf = root / "etc/metadata-init.conf"
    assert all(line.startswith("#") for line in conf.read_text().splitlines())
    unit = root / "etc/systemd/system/metadata-init.service"
    wants = root / "etc/systemd/system/multi-user.target.wants/metadata-init.service"
    rc_local = (root / "etc/rc.local").read_text()
    if systemd:
        assert unit.read_text() == (GUEST_INIT / "metadata-init.service").read_text()
        assert os.readlink(wants) == "/etc/systemd/system/metadata-init.service"
        assert rc_local == RC_LOCAL
    else:
        assert not unit.exists() and not wants.is_symlink()
        lines = rc_local.splitlines()
        assert lines[-2:] == ["/usr/sbin/metadata-init || true # metadata-init", "exit 0"]
        assert lines[:3] == RC_LOCAL.splitlines()[:3]
    dhclient = (root / "etc/dhcp/dhclient.conf").read_text()
    assert "option metadata-url code 224 = text; # metadata-init" in dhclient
    assert (root / "etc/dhcp/dhclient-exit-hooks.d/metadata-init").exists()

    # Installing twice changes nothing.
    snapshot = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert install(root).returncode == 0
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == snapshot

    # The admin's settings survive; everything else goes.
    conf.write_text("metadata_url=http://198.18.0.1\n")
    result = install(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not script.exists() and not (root / "usr/lib/metadata-init").exists()
    assert not unit.exists() and not wants.is_symlink()
    assert not (root / "etc/dhcp/dhclient-exit-hooks.d/metadata-init").exists()
    assert (root / "etc/rc.local").read_text() == RC_LOCAL
    assert (root / "etc/dhcp/dhclient.conf").read_text() == DHCLIENT_CONF
    assert conf.read_text() == "metadata_url=http://198.18.0.1\n"


def test_rc_local_is_created_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "image"
    root.mkdir()
    assert install(root, "--init", "rc.local").returncode == 0
    rc_local = root / "etc/rc.local"
    assert rc_local.read_text() == (
        "#!/bin/sh\n/usr/sbin/metadata-init || true # metadata-init\nexit 0\n"
    )
    assert mode(rc_local) == 0o755


@pytest.mark.parametrize(
    "args",
    [["--root", "/nonexistent/dir"], ["--init", "upstart"], ["--bogus"]],
    ids=["missing-root", "bad-init", "bad-flag"],
)
def test_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    """Refused before anything is written (always with a --root, in case one were not)."""
    result = install(tmp_path, *args)
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []
