"""Disk images from directory trees, without mounting a filesystem: `mkfs.ext4 -d` fills a
sparse file from a tree, `qemu-img convert` makes a qcow2 of it. And an overlay mount, so
a layer can add files to a cached tree without changing the tree."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lab.builder.commands import Runner


def ext4_image(runner: Runner, tree: Path, image: Path, label: str, size: str) -> None:
    """A sparse ext4 image of `size` holding `tree`."""
    image.unlink(missing_ok=True)
    runner.run(
        f"mkfs.ext4 {image.name}",
        # no journal wait at first mount, no lazy init writing in the VM later
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            "-d",
            str(tree),
            str(image),
            size,
        ],
        heavy=True,
    )


def qcow2_from_raw(runner: Runner, raw: Path, qcow2: Path) -> None:
    runner.run(
        f"qemu-img convert {qcow2.name}",
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        heavy=True,
    )


@contextlib.contextmanager
def overlay(lower: Path, work: Path) -> Iterator[tuple[Path, Path]]:
    """`lower` as a writable tree whose changes land in an upper directory below `work`:
    yields (merged view, upper). Unmounted on the way out."""
    upper, scratch, merged = work / "upper", work / "work", work / "merged"
    for path in (upper, scratch, merged):
        path.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={scratch}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        yield merged, upper
    finally:
        subprocess.run(["umount", str(merged)], check=False)
