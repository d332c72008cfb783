"""`image prepare`: a raw or qcow2 disk with a Linux root becomes a master image.

The source is never written: it is converted into a raw working copy in a private
temporary directory next to the output (`.MASTER.*.prepare`, 0700), and everything
happens there. The working copy's Linux root (locate.py) is loop-attached and mounted,
changed (guest_tree.py), its free space trimmed (so that what was removed, the SSH host
keys among it, is zeros in the master, not recoverable from free blocks), unmounted and
detached; the copy is converted to the master's
format under a temporary name, hashed, made read-only (0444), and linked into place
with its record: `os.link` does not replace a file that appeared meanwhile, so an
existing output is never overwritten. Whatever happens (an error, a full disk, Ctrl-C,
SIGTERM), the mount, the loop devices and the temporary directory go; `progress` hears
a line before each step.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from metadata_server import __version__
from metadata_server.errors import os_reason
from metadata_server.images.disk import (
    QEMU_FORMATS,
    convert,
    image_info,
    loop_device,
    mounted,
    trim_free_space,
)
from metadata_server.images.errors import ImageError, ImageToolFailed
from metadata_server.images.guest_tree import (
    clear_clone_state,
    install_guest_init,
    regenerate_host_keys_at_first_boot,
    set_verify_key,
)
from metadata_server.images.interrupts import hold, holdings, signals_deferred
from metadata_server.images.locate import RootLocation, locate_root
from metadata_server.images.record import (
    MasterRecord,
    digest_file,
    image_id_for,
    record_path,
    write_record,
)
from metadata_server.images.tools import PREPARE_TOOLS, Tools, find_tools

SOURCE_FORMATS = ("raw", "qcow2")
FORMATS = tuple(QEMU_FORMATS)  # of a master
NOT_ROOT = "image prepare needs root for loop devices and mounts"

# The progress lines, one before each step, in order (tests wait for them).
CONVERTING = "converting the source to a raw working copy"
LOCATING = "looking for the Linux root"
MOUNTING = "mounting the root filesystem"
INSTALLING = "installing the guest boot script"
CLEARING = "clearing what each clone makes for itself"
TRIMMING = "trimming the filesystem's free space"
UNMOUNTING = "unmounting"
WRITING = "writing the master"
HASHING = "computing the image id"
STEPS = (
    CONVERTING,
    LOCATING,
    MOUNTING,
    INSTALLING,
    CLEARING,
    TRIMMING,
    UNMOUNTING,
    WRITING,
    HASHING,
)


@dataclass(frozen=True)
class PrepareRequest:
    source: Path
    out: Path
    format: str = "qcow2"
    verify_key: str | None = None  # the base64 line of the server's public key


def check_request(source: Path, out: Path, fmt: str) -> Tools:
    """Everything that can be known before anything is made: root, tools, the paths."""
    if os.geteuid() != 0:
        raise ImageError(NOT_ROOT)
    if fmt not in FORMATS:
        raise ImageError(f"--format must be one of {', '.join(FORMATS)}")
    tools = find_tools(*PREPARE_TOOLS)
    if not source.exists():
        raise ImageError(f"the source image {source} does not exist")
    if source.is_dir():
        raise ImageError(f"the source image {source} is a directory")
    directory = out.parent
    if not directory.is_dir():
        raise ImageError(f"the output directory {directory} does not exist")
    for path in (out, record_path(out)):
        if os.path.lexists(path):
            raise ImageError(f"{path} exists: give a new name (a master is never replaced)")
    return tools


def prepare_master(
    request: PrepareRequest, tools: Tools, progress: Callable[[str], None]
) -> MasterRecord:
    source, out = request.source, Path(os.path.abspath(request.out))
    info = image_info(tools, source, what="the source image")
    if info.format not in SOURCE_FORMATS:
        raise ImageError(f"{source} is a {info.format} image; prepare takes raw or qcow2")
    with holdings() as stack:
        work = hold(stack, _work_directory(out))
        raw = work / "disk.raw"
        mountpoint = work / "root"
        mountpoint.mkdir()
        progress(f"{CONVERTING}: {raw}")
        with _space_errors(out.parent):
            convert(tools, source, info.format, raw, "raw")

        progress(LOCATING)
        root = locate_root(tools, raw, mountpoint, source=source)
        progress(f"{MOUNTING}: {root.where} ({root.fstype})")
        init, changes = _change_root(tools, raw, root, work, request.verify_key, progress)

        progress(f"{WRITING}: {request.format}")
        written = work / f"master.{request.format}"
        with _space_errors(out.parent):
            convert(tools, raw, "raw", written, QEMU_FORMATS[request.format])
        raw.unlink()
        os.chmod(written, 0o444)
        progress(HASHING)
        sha256 = digest_file(written)
        written_info = written.stat()
        record = MasterRecord(
            image_id=image_id_for(sha256),
            sha256=sha256,
            format=request.format,
            size=written_info.st_size,
            mtime_ns=written_info.st_mtime_ns,
            virtual_size=info.virtual_size,
            source=os.path.abspath(source),
            source_format=info.format,
            root=f"{root.where} ({root.fstype})",
            init=init,
            verify_key=request.verify_key is not None,
            prepared_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            prepared_by=f"metadata-server {__version__}",
            changes=tuple(changes),
        )
        with _space_errors(out.parent):
            write_record(work / "record.json", record)
        _publish(work / "record.json", record_path(out), written, out)
    return record


def _change_root(
    tools: Tools,
    raw: Path,
    root: RootLocation,
    work: Path,
    verify_key: str | None,
    progress: Callable[[str], None],
) -> tuple[str, list[str]]:
    """Mount the root at `work/root`, change it, trim it and unmount it; the init system
    install.sh chose and the changes, in words."""
    mountpoint = work / "root"
    with holdings() as mounts:
        device = hold(mounts, loop_device(tools, raw, offset=root.offset, size=root.size))
        hold(mounts, mounted(tools, device, mountpoint, fstype=root.fstype, read_only=False))
        progress(INSTALLING)
        scratch = work / "guest_init"
        scratch.mkdir()
        with _space_errors("the image's filesystem"):
            init = install_guest_init(tools, mountpoint, scratch)
            changes = [f"metadata-init installed ({init})"]
            if verify_key is not None:
                set_verify_key(mountpoint, verify_key)
                changes.append("verify_key set in /etc/metadata-init.conf")
            progress(CLEARING)
            changes += clear_clone_state(mountpoint)
            changes.append(regenerate_host_keys_at_first_boot(mountpoint, init))
        progress(TRIMMING)
        changes.append(trim_free_space(tools, mountpoint))
        progress(UNMOUNTING)
    return init, changes


def _publish(record_file: Path, record_target: Path, master_file: Path, master: Path) -> None:
    """The record, then the master, put into place (never over an existing file): both
    or neither."""
    with signals_deferred():
        _place(record_file, record_target)
        try:
            _place(master_file, master)
        except BaseException:
            record_target.unlink()
            raise


@contextlib.contextmanager
def _work_directory(out: Path) -> Iterator[Path]:
    """A new private directory next to `out`, removed with everything in it at exit
    (after the mount in it is gone: the stack undoes that first)."""
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".prepare", dir=out.parent))
    except OSError as exc:
        raise ImageError(f"cannot write in {out.parent}: {os_reason(exc)}") from None
    try:
        yield path
    finally:
        if os.path.ismount(path / "root"):  # the unmount failed and said so: keep its tree
            raise ImageToolFailed(f"{path / 'root'} is still mounted; remove {path} after")
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _space_errors(where: object) -> Iterator[None]:
    """A full disk or an unwritable directory, said in one line (qemu-img's and ours)."""
    try:
        yield
    except ImageToolFailed as error:
        if "No space left on device" in error.stderr:
            raise ImageError(f"no space left on the device of {where}") from None
        raise
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise ImageError(f"cannot write in {where}: {os_reason(error)}") from None
        raise


def _place(file: Path, target: Path) -> None:
    """`file` linked as `target`, which must not exist; on a filesystem without hard
    links, renamed after a last look (a small race, there only)."""
    try:
        os.link(file, target)
    except FileExistsError:
        raise ImageError(f"{target} appeared meanwhile: nothing was written") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise ImageError(f"{target} appeared meanwhile: nothing was written") from None
        os.rename(file, target)
