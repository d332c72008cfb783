"""A master's record: the file `MASTER.image.json` next to it, written by `image prepare`,
read by `image clone` (and by `vm launch`, for the guest's EC2 `ami-id`).

The image id is the SHA-256 of the master file's bytes as written (the qcow2 or vhd
file, not the disk it holds): anyone can recompute it with `sha256sum`, and the master
is never written again, so it never changes. `image_id` is its EC2-shaped form, `ami-`
and its first 17 hex digits. Re-hashing a large master takes a while (about a second
per GiB), so the everyday check (`read_master`) compares the file's size and
modification time with the record, and `verify=True` re-hashes: that check decides by
the digest alone (a master copied without its times passes it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from metadata_server.images.errors import NotAMaster

SUFFIX = ".image.json"
KIND = "metadata-server master image"
RECORD_VERSION = 1
CHUNK = 1 << 20
# The modification time is compared to the second: a master copied with its times by
# tar, rsync or `mke2fs -d` (the Xen lab's images) keeps no finer part of it.
NS_PER_SECOND = 10**9


@dataclass(frozen=True)
class MasterRecord:
    image_id: str  # ami- and 17 hex digits of sha256
    sha256: str
    format: str  # qcow2 or vhd
    size: int  # bytes of the master file
    mtime_ns: int
    virtual_size: int  # bytes of the disk it holds
    source: str
    source_format: str
    root: str  # where the Linux root was: "the whole disk (ext4)", "partition 2 (ext4)"
    init: str  # systemd or rc.local, as install.sh chose
    verify_key: bool  # whether the guest config holds the server's signing key
    prepared_at: str  # ISO 8601, UTC
    prepared_by: str  # "metadata-server VERSION"
    changes: tuple[str, ...]  # what prepare changed in the image, in words

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": KIND, "record_version": RECORD_VERSION}
        body.update(asdict(self))
        body["changes"] = list(self.changes)
        return body


def record_path(master: Path) -> Path:
    """Where the record of `master` is (next to the file itself, links resolved)."""
    real = Path(os.path.realpath(master))
    return real.with_name(real.name + SUFFIX)


def digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def image_id_for(sha256: str) -> str:
    return "ami-" + sha256[:17]


def write_record(path: Path, record: MasterRecord) -> None:
    """The record as a new read-only file `path` (which must not exist)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    with os.fdopen(fd, "w") as handle:
        json.dump(record.to_json(), handle, indent=2)
        handle.write("\n")
    os.chmod(path, 0o444)


def parse_record(obj: Any, where: Path) -> MasterRecord:
    """The one door from a record's JSON; NotAMaster naming `where` when it is not one."""

    def bad(why: str) -> NotAMaster:
        return NotAMaster(f"{where} is not a master record: {why}")

    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise bad(f'it has no "kind": "{KIND}"')
    if obj.get("record_version") != RECORD_VERSION:
        raise bad(f"its record_version is not {RECORD_VERSION}")
    values: dict[str, Any] = {}
    for name, kind in MasterRecord.__annotations__.items():
        value = obj.get(name)
        wanted = {"int": int, "bool": bool, "str": str}.get(kind, list)
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise bad(f"{name} is missing or not of type {wanted.__name__}")
        values[name] = value
    if not all(isinstance(change, str) for change in values["changes"]):
        raise bad("changes is not a list of strings")
    values["changes"] = tuple(values["changes"])
    record = MasterRecord(**values)
    if record.image_id != image_id_for(record.sha256) or len(record.sha256) != 64:
        raise bad("its image_id is not the one of its sha256")
    return record


def read_master(path: Path, *, verify: bool = False) -> MasterRecord:
    """The record of the prepared master `path`; NotAMaster when `path` is missing, has
    no record, or differs from it (size and modification time, to the second; with `verify`, the
    SHA-256 of its bytes, which alone decides then)."""
    master = Path(os.path.realpath(path))
    if not master.is_file():
        raise NotAMaster(f"{path} is not a file" if master.exists() else f"{path} does not exist")
    where = record_path(master)
    try:
        text = where.read_text()
    except FileNotFoundError:
        raise NotAMaster(
            f"{path} is not a prepared master: there is no {where.name} next to it "
            "(make one with `metadata-server image prepare`)"
        ) from None
    except OSError as exc:
        raise NotAMaster(f"cannot read {where}: {exc.strerror}") from None
    try:
        obj = json.loads(text)
    except ValueError:
        raise NotAMaster(f"{where} is not a master record: not JSON") from None
    record = parse_record(obj, where)
    info = master.stat()
    if info.st_size != record.size:
        raise NotAMaster(
            f"{path} was changed since it was prepared: {info.st_size} bytes, "
            f"its record {where.name} says {record.size}"
        )
    if verify:
        if digest_file(master) != record.sha256:
            raise NotAMaster(
                f"{path} was changed since it was prepared: its SHA-256 is not the one "
                f"in {where.name}"
            )
    elif info.st_mtime_ns // NS_PER_SECOND != record.mtime_ns // NS_PER_SECOND:
        raise NotAMaster(
            f"{path} may have changed since it was prepared: its modification time is "
            f"not the one in {where.name} (written, or copied without its times?); "
            "--verify checks its SHA-256 instead"
        )
    return record
