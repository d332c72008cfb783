"""A master's record: `read_master` is the one door (for clone now, for `vm launch`
later), and it refuses whatever is not a prepared master, naming why. No root needed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from metadata_server.images.errors import NotAMaster
from metadata_server.images.record import MasterRecord, image_id_for, read_master, write_record


def make_master(top: Path, data: bytes = b"QFI\xfb a master's bytes") -> tuple[Path, MasterRecord]:
    master = top / "m.qcow2"
    master.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    record = MasterRecord(
        image_id=image_id_for(digest), sha256=digest, format="qcow2", size=len(data),
        mtime_ns=master.stat().st_mtime_ns, virtual_size=1 << 20, source="/images/debian.raw",
        source_format="raw", root="partition 1 (ext4)", init="systemd", verify_key=False,
        prepared_at="2026-01-01T00:00:00+00:00", prepared_by="metadata-server 0.1.0",
        changes=("/etc/machine-id emptied",),
    )  # fmt: skip
    write_record(top / "m.qcow2.image.json", record)
    return master, record


def test_a_master_and_its_record(tmp_path: Path) -> None:
    master, record = make_master(tmp_path)
    assert read_master(master) == record
    assert read_master(master, verify=True) == record
    assert record.image_id == "ami-" + record.sha256[:17] and len(record.image_id) == 21
    assert oct((tmp_path / "m.qcow2.image.json").stat().st_mode & 0o777) == "0o444"
    link = tmp_path / "link.qcow2"
    link.symlink_to(master)  # the record is found next to the file itself
    assert read_master(link) == record


def rewrite(path: Path, **changes: object) -> None:
    body = json.loads(path.read_text())
    body.update(changes)
    for name in [k for k, v in changes.items() if v is None]:
        del body[name]
    path.chmod(0o644)
    path.write_text(json.dumps(body))


CASES = {
    "no-record": (
        lambda m, r: r.unlink(),
        "is not a prepared master: there is no m.qcow2.image.json next to it",
    ),
    "not-json": (
        lambda m, r: (r.chmod(0o644), r.write_text("{")),
        "is not a master record: not JSON",
    ),
    "another-kind": (lambda m, r: rewrite(r, kind="something"), 'has no "kind"'),
    "a-field-missing": (
        lambda m, r: rewrite(r, sha256=None),
        "sha256 is missing or not of type str",
    ),
    "a-bool-for-a-size": (lambda m, r: rewrite(r, size=True), "size is missing or not of type int"),
    "an-id-not-of-its-digest": (
        lambda m, r: rewrite(r, image_id="ami-00000000000000000"),
        "its image_id is not the one of its sha256",
    ),
    "grown": (
        lambda m, r: m.write_bytes(m.read_bytes() + b"x"),
        "was changed since it was prepared",
    ),
    "touched": (lambda m, r: os.utime(m, ns=(0, 0)), "may have changed since it was prepared"),
    "missing": (lambda m, r: m.unlink(), "m.qcow2 does not exist"),
}


@pytest.mark.parametrize(("spoil", "says"), CASES.values(), ids=CASES.keys())
def test_not_a_master(tmp_path: Path, spoil: object, says: str) -> None:
    master, _ = make_master(tmp_path)
    spoil(master, tmp_path / "m.qcow2.image.json")  # type: ignore[operator]
    with pytest.raises(NotAMaster) as caught:
        read_master(master)
    assert says in caught.value.detail
    assert caught.value.http_status == 400 and caught.value.code == "image"
