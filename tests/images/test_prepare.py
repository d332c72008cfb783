"""`image prepare` on a whole-disk filesystem (raw and qcow2) and on a partitioned disk:
the master is qcow2, 0444, holds the boot script, its unit, hook and config, has the
per-clone state cleared and the host-key unit in; its record's id is its SHA-256."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from metadata_server.cli.main import main
from metadata_server.images.guest_tree import HOST_KEYS_RC_LINE, HOST_KEYS_UNIT_NAME
from metadata_server.images.prepare import STEPS
from metadata_server.images.record import read_master
from metadata_server.signing import load_key
from tests.images.conftest import MACHINE_ID, Sources, opened, sh, sha256

GUEST_INIT = Path(__file__).resolve().parents[2] / "guest_init"


def sh_bytes(image: Path, scratch: Path) -> bytes:
    """The disk `image` holds, as bytes."""
    disk = scratch / "source.raw"
    sh("qemu-img", "convert", "-O", "raw", image, disk)
    try:
        return disk.read_bytes()
    finally:
        disk.unlink()


def prepare(
    source: Path, out: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["image", "prepare", str(source), "--out", str(out), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("name", "root"),
    [("whole", "the whole disk (ext4)"), ("whole_qcow2", "the whole disk (ext4)"), ("partitioned", "partition 2 (ext4)")],
)  # fmt: skip
def test_prepare_makes_a_master(
    sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str], name: str, root: str
) -> None:
    master = clean / "master.qcow2"
    host_machine_id = Path("/etc/machine-id").read_bytes()
    code, out, err = prepare(getattr(sources, name), master, capsys)
    assert code == 0, err
    steps = [line.removeprefix("image prepare: ") for line in err.splitlines()]
    assert [next(s for s in STEPS if line.startswith(s)) for line in steps] == list(STEPS)

    info = json.loads(sh("qemu-img", "info", "--output=json", master))
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert stat.S_IMODE(master.stat().st_mode) == 0o444
    record = json.loads(out)
    assert record["sha256"] == sha256(master)
    assert record["image_id"] == "ami-" + record["sha256"][:17]
    assert record["root"] == root and record["init"] == "systemd"
    assert record["source"] == str(getattr(sources, name))
    assert record == read_master(master, verify=True).to_json()
    saved = (clean / "master.qcow2.image.json").read_text()
    assert json.loads(saved) == record
    assert stat.S_IMODE((clean / "master.qcow2.image.json").stat().st_mode) == 0o444
    assert sorted(p.name for p in clean.iterdir()) == ["master.qcow2", "master.qcow2.image.json"]

    # what was removed is not in the master's bytes either (its free space was trimmed)
    disk = clean / "check.raw"
    sh("qemu-img", "convert", "-O", "raw", master, disk)
    data = disk.read_bytes()
    disk.unlink()
    assert b"i-template mac uuid" in sh_bytes(getattr(sources, name), clean)
    for removed in (
        b"ssh_host_ed25519_key of the template",
        MACHINE_ID.encode(),
        b"i-template mac uuid",
    ):
        assert removed not in data
    assert "free space trimmed (zeros)" in record["changes"]

    offset = sources.partitioned_root_offset if name == "partitioned" else 0
    with opened(master, clean, offset=offset) as top:
        assert (top / "usr/sbin/metadata-init").read_bytes() == (
            GUEST_INIT / "metadata-init"
        ).read_bytes()
        assert stat.S_IMODE((top / "usr/sbin/metadata-init").stat().st_mode) == 0o755
        assert (top / "usr/lib/metadata-init/dhcp-hook").read_bytes() == (
            GUEST_INIT / "dhcp-hook"
        ).read_bytes()
        unit = top / "etc/systemd/system/metadata-init.service"
        assert unit.read_text() == (GUEST_INIT / "metadata-init.service").read_text()
        wants = top / "etc/systemd/system/multi-user.target.wants"
        assert (
            os.readlink(wants / "metadata-init.service")
            == "/etc/systemd/system/metadata-init.service"
        )
        assert (
            os.readlink(wants / HOST_KEYS_UNIT_NAME) == f"/etc/systemd/system/{HOST_KEYS_UNIT_NAME}"
        )
        keys_unit = (top / f"etc/systemd/system/{HOST_KEYS_UNIT_NAME}").read_text()
        assert "ExecStart=/usr/bin/ssh-keygen -A" in keys_unit and "Before=ssh.service" in keys_unit
        assert "dhclient-exit-hooks.d" in str(next((top / "etc/dhcp").rglob("metadata-init")))
        conf = (top / "etc/metadata-init.conf").read_text()
        assert "#verify_key=" in conf and "\nverify_key=" not in conf
        # per clone: an empty machine-id (kept 0444), no host keys, no old state
        assert (top / "etc/machine-id").read_bytes() == b""
        assert stat.S_IMODE((top / "etc/machine-id").stat().st_mode) == 0o444
        assert not os.path.lexists(top / "var/lib/dbus/machine-id")
        assert not os.path.lexists(top / "var/lib/systemd/random-seed")
        assert sorted(p.name for p in (top / "etc/ssh").iterdir()) == ["sshd_config"]
        assert list((top / "var/lib/metadata-init").iterdir()) == []
        # the rest of the tree is the template's
        assert (top / "etc/hostname").read_text() == "template\n"
        assert os.readlink(top / "bin") == "usr/bin"
    # /var/lib/dbus/machine-id was a link to /etc/machine-id: this host's was not touched
    assert Path("/etc/machine-id").read_bytes() == host_machine_id


def test_prepare_with_the_servers_key_and_without_systemd(
    sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master = clean / "master.qcow2"
    db = clean / "state/registry.db"
    code, out, err = prepare(
        sources.sysv, master, capsys, "--verify-key-from-server", "--db", str(db)
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["init"] == "rc.local" and record["verify_key"] is True
    key = load_key(db.parent / "signing-key.pem")  # made as `key show` makes it
    pem_line = key.public_pem().splitlines()[1]
    assert key.verify_key() == pem_line
    with opened(master, clean) as top:
        conf = (top / "etc/metadata-init.conf").read_text().splitlines()
        assert [line for line in conf if line.startswith("verify_key=")] == [
            f"verify_key={pem_line}"
        ]
        rc_local = (top / "etc/rc.local").read_text().splitlines()
        assert rc_local[0] == "#!/bin/sh -e" and rc_local[-1] == "exit 0"
        assert (
            HOST_KEYS_RC_LINE in rc_local
            and "/usr/sbin/metadata-init || true # metadata-init" in rc_local
        )
        assert not (top / "etc/systemd/system").exists()
        assert (top / "etc/machine-id").read_bytes() == b""


def test_prepare_a_vhd_master(
    sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master = clean / "master.vhd"
    code, out, err = prepare(sources.whole, master, capsys, "--format", "vhd")
    assert code == 0, err
    info = json.loads(sh("qemu-img", "info", "--output=json", master))
    assert info["format"] == "vpc" and info["actual-size"] < info["virtual-size"]  # dynamic
    assert info["virtual-size"] == sources.whole.stat().st_size  # not rounded to a CHS size
    assert json.loads(out)["format"] == "vhd"
    assert read_master(master, verify=True).sha256 == sha256(master)
    assert main(["image", "show", str(master), "--verify"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(out)
