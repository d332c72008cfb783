"""Bad input to `image prepare` gets one clear line on stderr, exit 1, and changes
nothing: the output directory is as it was, the source unchanged (the session fixture
checks every source's digest at the end), no loop device, mount or process left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.images.prepare import NOT_ROOT
from metadata_server.images.tools import PREPARE_TOOLS
from tests.images.conftest import Sources, holding_open, refused, tmpfs
from tests.support.requirements import need_tools


@dataclass(frozen=True)
class Case:
    source: str  # a Sources field, or a path relative to the test's directory
    out: str  # relative to the test's directory
    says: str  # in the error line
    setup: Callable[[Path], None] | None = None


def existing(name: str) -> Callable[[Path], None]:
    return lambda top: (top / name).write_text("mine\n")


CASES = {
    "source-missing": Case("missing.raw", "m.qcow2", "missing.raw does not exist"),
    "source-a-directory": Case(".", "m.qcow2", "is a directory"),
    "source-not-a-disk": Case("text", "m.qcow2", "neither a partition table nor a filesystem"),
    "no-linux-root": Case(
        "no_root",
        "m.qcow2",
        "no Linux root filesystem (one with /etc and /usr or /bin): the whole disk: ext4 without",
    ),
    "several-roots": Case(
        "ambiguous", "m.qcow2", "several Linux root filesystems (partition 1, partition 2)"
    ),
    "output-directory-missing": Case("whole", "nowhere/m.qcow2", "output directory"),
    "output-exists": Case("whole", "m.qcow2", "m.qcow2 exists", existing("m.qcow2")),
    "record-exists": Case(
        "whole", "m.qcow2", "m.qcow2.image.json exists", existing("m.qcow2.image.json")
    ),
    "output-is-the-source": Case("whole", "SOURCE", "whole.raw exists: give a new name"),
    "link-out-of-the-image": Case(
        "escaping", "m.qcow2", "/etc/systemd in the image goes through a link that leads out of it"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_changes_nothing(
    sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    source = getattr(sources, case.source, None) or clean / case.source
    out = source if case.out == "SOURCE" else clean / case.out
    if case.setup is not None:
        case.setup(clean)
    line = refused(["image", "prepare", str(source), "--out", str(out)], capsys, clean)
    assert case.says in line


FILESYSTEM_CASES = {
    "read-only-output-directory": (
        "ro,size=1m",
        "whole",
        "cannot write in {}: the file system is read-only",
    ),
    "disk-full": ("size=4m", "big", "no space left on the device of {}"),
}


@pytest.mark.parametrize(
    ("options", "source", "says"), FILESYSTEM_CASES.values(), ids=FILESYSTEM_CASES.keys()
)
def test_an_output_filesystem_that_cannot_take_it(
    sources: Sources,
    clean: Path,
    capsys: pytest.CaptureFixture[str],
    options: str,
    source: str,
    says: str,
) -> None:
    """A tmpfs made for the test; with 4 MiB, the working copy fills it during the
    convert (ENOSPC), and the temporary file goes."""
    with tmpfs(clean / "tmpfs", options) as directory:
        argv = [
            "image",
            "prepare",
            str(getattr(sources, source)),
            "--out",
            str(directory / "m.qcow2"),
        ]
        line = refused(argv, capsys, directory)
        assert os.listdir(directory) == []
        assert shutil.disk_usage(directory).used < 64 << 10
    assert line == "metadata-server: " + says.format(directory)


def test_a_source_in_use(sources: Sources, clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = clean / "running.raw"
    shutil.copyfile(sources.whole, copy)
    with holding_open(copy, "raw"):
        line = refused(
            ["image", "prepare", str(copy), "--out", str(clean / "m.qcow2")], capsys, clean
        )
    assert "running.raw is in use: a process holds QEMU's write lock on it" in line


@pytest.mark.parametrize("tool", ["qemu-img", "losetup", "mount", "sfdisk"])
def test_a_missing_tool_is_named_before_anything_is_made(
    sources: Sources,
    clean: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
) -> None:
    bin_dir = clean / "bin"
    bin_dir.mkdir()
    for other in PREPARE_TOOLS:
        if other != tool:
            (bin_dir / other).symlink_to(shutil.which(other) or "")
    monkeypatch.setenv("PATH", str(bin_dir))
    out_dir = clean / "out"
    out_dir.mkdir()
    line = refused(
        ["image", "prepare", str(sources.whole), "--out", str(out_dir / "m.qcow2")], capsys, out_dir
    )
    assert line.startswith(f"metadata-server: missing: {tool} (") and line.endswith(
        "; nothing was done"
    )


def test_not_root(sources: Sources, clean: Path) -> None:
    tools = need_tools("setpriv")
    result = subprocess.run(
        [tools["setpriv"], "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "metadata_server", "image", "prepare", str(sources.whole), "--out", "/tmp/never.qcow2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"metadata-server: {NOT_ROOT}\n"
    assert not os.path.lexists("/tmp/never.qcow2")
