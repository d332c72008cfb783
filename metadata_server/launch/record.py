"""The launch record: `launch.json` in the guest's launch directory
(`<state directory>/launched/NAME/`, 0700), next to its xl config and its delta. It says
that this Dom0 launched the guest and what it made (MAC, image, delta, config), so
`vm destroy` undoes exactly that, even after a crash between two steps of a launch;
the guest's registration holds the same paths (`launch` in the record), for `vm show`
and for every server of a cluster. Written 0600, never over an existing file."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECORD_NAME = "launch.json"
CONFIG_SUFFIX = ".cfg"
DELTA_NAME = "disk.qcow2"
KIND = "metadata-server launch"


@dataclass(frozen=True)
class LaunchPaths:
    """Where one guest's launch lives."""

    directory: Path

    @property
    def record(self) -> Path:
        return self.directory / RECORD_NAME

    @property
    def delta(self) -> Path:
        return self.directory / DELTA_NAME

    @property
    def config(self) -> Path:
        return self.directory / (self.directory.name + CONFIG_SUFFIX)


def paths_for(launched: Path, name: str) -> LaunchPaths:
    return LaunchPaths(launched / name)


@dataclass(frozen=True)
class LaunchRecord:
    name: str
    mac: str
    address: str
    uuid: str
    image: str
    image_id: str
    delta: str
    xl_config: str
    launched_at: float


def write_private(path: Path, text: str) -> None:
    """`text` as a new file `path`, 0600 whatever the umask; never over a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if fd != -1:
            os.close(fd)


def remove_file(path: Path) -> None:
    """Remove `path`; already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove_dir(path: Path) -> None:
    """Remove the empty directory `path`; already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def write_record(paths: LaunchPaths, record: LaunchRecord) -> None:
    body: dict[str, Any] = {"kind": KIND, **asdict(record)}
    write_private(paths.record, json.dumps(body, indent=2) + "\n")


def read_record(paths: LaunchPaths) -> LaunchRecord | None:
    """The launch record, or None when there is none; ValueError when it is not one."""
    try:
        obj = json.loads(paths.record.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise ValueError(f"{paths.record} is not a launch record")
    try:
        return LaunchRecord(**{name: obj[name] for name in LaunchRecord.__dataclass_fields__})
    except (KeyError, TypeError):
        raise ValueError(f"{paths.record} is not a complete launch record") from None
