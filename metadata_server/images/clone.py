"""`image clone`: a guest's delta disk, backed by a prepared master that it never writes.

qcow2: `qemu-img create -f qcow2 -b MASTER -F qcow2` with the master's absolute path (a
relative one would be read from the delta's directory). vhd: `vhd-util snapshot -n
DELTA -p MASTER` of a vhd master (`image prepare --format vhd`); vhd-util is blktap's,
which Debian does not package, and it cannot stack a vhd delta on a qcow2 master.

The master must be a prepared one (its record next to it, the same size and
modification time, or with `verify` the same SHA-256) and not in use: "in use" is a
write lock on it, the one QEMU (a running guest's qdisk backend, qemu-io, qemu-nbd)
takes on an image it opens for writing, found by `qemu-img info`, which takes QEMU's
locks. Readers (the guests running on deltas of it) do not count: sharing is the point.
The delta is made under a temporary name next to it and linked into place, so an
existing file is never replaced and a failed or interrupted clone leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from metadata_server.errors import os_reason
from metadata_server.images.disk import QEMU_FORMATS, image_info
from metadata_server.images.errors import ImageError
from metadata_server.images.interrupts import signals_deferred
from metadata_server.images.record import MasterRecord, read_master
from metadata_server.images.tools import find_tools, run


def clone_master(
    master: Path, delta: Path, *, fmt: str | None = None, verify: bool = False
) -> MasterRecord:
    """A new delta `delta` on `master`; the master's record. `fmt` defaults to the
    master's own format."""
    if fmt is not None and fmt not in QEMU_FORMATS:
        raise ImageError(f"--format must be one of {', '.join(QEMU_FORMATS)}")
    tools = find_tools("qemu-img", *(["vhd-util"] if fmt == "vhd" else []))
    backing = Path(os.path.realpath(master))
    delta = Path(os.path.abspath(delta))
    if os.path.lexists(delta):
        raise ImageError(f"{delta} exists: a delta is never replaced")
    if not delta.parent.is_dir():
        raise ImageError(f"the output directory {delta.parent} does not exist")
    record = read_master(master, verify=verify)
    fmt = fmt or record.format
    if fmt != record.format:
        raise ImageError(
            f"{master} is a {record.format} master: its deltas are {record.format} "
            f"(prepare a {fmt} master with `image prepare --format {fmt}`)"
        )
    if fmt == "vhd":
        tools = find_tools("qemu-img", "vhd-util")
    info = image_info(tools, backing, what="the master")
    if info.format != QEMU_FORMATS[fmt] or info.backing_file:
        raise ImageError(f"{master} is not the standalone {fmt} image its record describes")
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{delta.name}.", suffix=".clone", dir=delta.parent))
    except OSError as exc:
        raise ImageError(f"cannot write in {delta.parent}: {os_reason(exc)}") from None
    try:
        made = work / delta.name
        if fmt == "qcow2":
            qemu = [tools["qemu-img"], "create", "-q", "-f", "qcow2"]
            run([*qemu, "-b", str(backing), "-F", "qcow2", str(made)])
        else:
            run([tools["vhd-util"], "snapshot", "-n", str(made), "-p", str(backing)])
        with signals_deferred():
            try:
                os.link(made, delta)
            except FileExistsError:
                raise ImageError(f"{delta} appeared meanwhile: nothing was written") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record
