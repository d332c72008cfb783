"""`image clone`: a qcow2 delta whose backing file is the master (by its absolute path),
the master never written (its bytes the same after a guest wrote into the delta), and
the refusals: not a master, a master changed since (cheaply by size and time; with
--verify by its digest), a master in use, an existing delta, vhd without vhd-util."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata_server.cli.main import main
from metadata_server.images.record import read_master
from tests.images.conftest import Sources, holding_open, opened, refused, sh, sha256


@pytest.fixture(scope="module")
def prepared(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One master for the module's tests, which must leave it as it is."""
    master = tmp_path_factory.mktemp("master") / "master.qcow2"
    assert main(["image", "prepare", str(sources.whole), "--out", str(master)]) == 0
    digest = sha256(master)
    yield master
    assert sha256(master) == digest


def test_clone_makes_a_delta_on_the_master(
    prepared: Path, clean: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    before = (sha256(prepared), prepared.stat().st_mtime_ns)
    monkeypatch.chdir(
        prepared.parent
    )  # a relative MASTER: the backing path is absolute all the same
    delta = clean / "guest1.qcow2"
    assert main(["image", "clone", prepared.name, "--out", str(delta)]) == 0
    assert capsys.readouterr().out == f"{delta}\n"
    info = json.loads(sh("qemu-img", "info", "--output=json", delta))
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(prepared) and info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == read_master(prepared).virtual_size
    assert os.listdir(clean) == ["guest1.qcow2"]

    # a guest writes into its delta (as its disk): the master's bytes stay as they were
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 20M 1M", delta)
    assert sha256(prepared) == before[0] and prepared.stat().st_mtime_ns == before[1]
    assert read_master(prepared, verify=True).sha256 == before[0]
    assert "read 1048576/1048576 bytes" in sh(
        "qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xab 20M 1M", delta
    )
    # and it still boots the master's tree: the delta reads through to it
    with opened(delta, clean) as top:
        assert (top / "usr/sbin/metadata-init").is_file()


def copy_of(master: Path, top: Path) -> Path:
    """A copy of the prepared master and its record, times kept (as `cp -p` does)."""
    copy = top / "copy.qcow2"
    shutil.copy2(master, copy)
    shutil.copy2(master.with_name(master.name + ".image.json"), top / "copy.qcow2.image.json")
    return copy


def test_a_master_touched_since_is_refused_unless_its_digest_says_it_is_the_same(
    prepared: Path, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_of(prepared, clean)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    line = refused(["image", "clone", str(copy), "--out", str(clean / "d.qcow2")], capsys, clean)
    assert "may have changed since it was prepared" in line and "--verify" in line
    assert main(["image", "clone", str(copy), "--out", str(clean / "d.qcow2"), "--verify"]) == 0


def test_a_copy_that_kept_its_time_only_to_the_second_is_accepted(
    prepared: Path, clean: Path
) -> None:
    """tar, rsync and `mke2fs -d` (the Xen lab's project image) keep whole seconds."""
    copy = copy_of(prepared, clean)
    whole = copy.stat().st_mtime_ns // 10**9 * 10**9
    os.utime(copy, ns=(whole, whole))
    assert main(["image", "clone", str(copy), "--out", str(clean / "d.qcow2")]) == 0


def test_a_master_written_since_is_refused_by_verify(
    prepared: Path, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_of(prepared, clean)
    times = (copy.stat().st_atime_ns, copy.stat().st_mtime_ns)
    with open(copy, "r+b") as handle:  # one byte changed, same size, time put back
        handle.seek(1 << 19)
        byte = handle.read(1)
        handle.seek(1 << 19)
        handle.write(bytes([byte[0] ^ 1]))
    os.utime(copy, ns=times)
    line = refused(
        ["image", "clone", str(copy), "--out", str(clean / "d.qcow2"), "--verify"], capsys, clean
    )
    assert (
        "was changed since it was prepared: its SHA-256 is not the one in copy.qcow2.image.json"
        in line
    )


def test_refusals(
    prepared: Path, sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    delta = str(clean / "d.qcow2")
    line = refused(["image", "clone", str(sources.whole_qcow2), "--out", delta], capsys, clean)
    assert (
        "whole.qcow2 is not a prepared master: there is no whole.qcow2.image.json next to it"
        in line
    )
    line = refused(["image", "clone", str(clean / "none.qcow2"), "--out", delta], capsys, clean)
    assert "none.qcow2 does not exist" in line
    (clean / "d.qcow2").write_text("the guest's disk\n")
    line = refused(["image", "clone", str(prepared), "--out", delta], capsys, clean)
    assert line.endswith("d.qcow2 exists: a delta is never replaced")
    assert (clean / "d.qcow2").read_text() == "the guest's disk\n"
    line = refused(
        ["image", "clone", str(prepared), "--out", str(clean / "no/d.qcow2")], capsys, clean
    )
    assert "output directory" in line


def test_a_master_in_use_is_refused(
    prepared: Path, clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = copy_of(prepared, clean)
    with holding_open(copy, "qcow2"):
        line = refused(
            ["image", "clone", str(copy), "--out", str(clean / "d.qcow2")], capsys, clean
        )
    assert "copy.qcow2 is in use: a process holds QEMU's write lock on it" in line
    # readers do not count: a running guest on a delta holds the master read-only
    assert main(["image", "clone", str(copy), "--out", str(clean / "d1.qcow2")]) == 0
    with holding_open(clean / "d1.qcow2", "qcow2"):
        assert main(["image", "clone", str(copy), "--out", str(clean / "d2.qcow2")]) == 0


def test_vhd_without_vhd_util(
    prepared: Path, clean: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = clean / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-img").symlink_to(shutil.which("qemu-img") or "")
    monkeypatch.setenv("PATH", str(bin_dir))
    line = refused(
        ["image", "clone", str(prepared), "--out", str(clean / "d.vhd"), "--format", "vhd"],
        capsys,
        clean,
    )
    assert "vhd-util is not installed" in line and "Debian does not package" in line
