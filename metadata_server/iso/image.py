"""A small ISO 9660 image built in memory with pycdlib: Rock Ridge and Joliet names, so
Linux (which reads Rock Ridge first, then Joliet) and cloud-init see lower-case long
names like `meta-data` and `network-config`, as `genisoimage -J -r` makes them.

Deterministic: the same files, label and date give the same bytes, whatever the clock,
the time zone or the order of the mapping. pycdlib stamps "now" (in local time) into
the volume descriptors, every directory record and every Rock Ridge TF entry, and takes
no date argument; so while an image is built, the `time` module that pycdlib's own
modules see is replaced by one whose clock stands still at `date`, in UTC. Only
pycdlib's module globals are touched, under a lock, and restored at once.

Pure: files in, bytes out. Must not read or write the disk, the network or the clock.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import gmtime, struct_time
from typing import Any

import pycdlib

MAX_LABEL = 32  # the volume identifier field
MAX_NAME = 64  # Joliet's limit for one name (in UCS-2 characters)
MAX_DEPTH = 7  # ISO 9660 allows 8 levels, the root included
ISO_LEVEL = 3  # names up to 30 characters; cloud-init and Linux read any level
JOLIET_LEVEL = 3
ROCK_RIDGE = "1.09"
APPLICATION = "METADATA-SERVER"
FILE_MODE = 0o100444  # r--r--r--: the medium is read-only
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_NOT_D_CHAR = re.compile(r"[^A-Z0-9_]")

_pin_lock = threading.Lock()
# pycdlib's modules that import `time` (all of them are loaded by `import pycdlib`)
_PYCDLIB_MODULES = tuple(
    module
    for name, module in sorted(sys.modules.items())
    if name.startswith("pycdlib.") and getattr(module, "time", None) is time
)


class _StoppedClock:
    """Stands in for the `time` module inside pycdlib while an image is built."""

    def __init__(self, epoch: float) -> None:
        self._epoch = epoch

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> struct_time:
        # UTC, so the GMT offset pycdlib derives is 0 in every time zone
        return gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)  # gmtime, strftime, strptime, struct_time


@contextmanager
def _pycdlib_clock(epoch: float) -> Iterator[None]:
    with _pin_lock:
        stopped = _StoppedClock(epoch)
        for module in _PYCDLIB_MODULES:
            module.time = stopped  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module in _PYCDLIB_MODULES:
                module.time = time  # type: ignore[attr-defined]


def iso_name(name: str, *, directory: bool) -> str:
    """The plain ISO 9660 name (level 3: upper case d-characters) of one path component,
    for readers without either extension: `meta-data` → `META_DATA.;1`."""
    if directory:
        return _NOT_D_CHAR.sub("_", name.upper())[:31]
    stem, dot, ext = name.upper().rpartition(".")
    if not dot:
        stem, ext = ext, ""
    stem = _NOT_D_CHAR.sub("_", stem)
    ext = _NOT_D_CHAR.sub("_", ext)
    stem = stem[: 30 - len(ext)] if ext else stem[:30]
    return f"{stem}.{ext};1"


def _check(files: Mapping[str, bytes], label: str) -> list[tuple[str, ...]]:
    if not 0 < len(label) <= MAX_LABEL or not _LABEL_RE.fullmatch(label):
        raise ValueError(f"{label!r} is not a volume label (1-{MAX_LABEL} of A-Z a-z 0-9 _ -)")
    paths = []
    for path in files:
        parts = tuple(path.split("/"))
        if len(parts) > MAX_DEPTH or any(
            part in ("", ".", "..") or len(part) > MAX_NAME or not _NAME_RE.fullmatch(part)
            for part in parts
        ):
            raise ValueError(f"{path!r} is not a relative path of plain names")
        paths.append(parts)
    return paths


def build_image(files: Mapping[str, bytes], *, label: str, date: float) -> bytes:
    """An ISO image holding `files` (relative path → content; directories are implied),
    labelled `label`, every timestamp `date` (seconds since the epoch, UTC)."""
    paths = _check(files, label)
    seen: dict[str, str] = {}
    with _pycdlib_clock(float(max(int(date), 1))):
        image = pycdlib.PyCdlib()
        image.new(
            interchange_level=ISO_LEVEL,
            vol_ident=label,
            joliet=JOLIET_LEVEL,
            rock_ridge=ROCK_RIDGE,
            app_ident_str=APPLICATION,
        )
        made: set[tuple[str, ...]] = set()
        for parts in sorted(paths):
            for depth in range(1, len(parts)):
                directory = parts[:depth]
                if directory not in made:
                    made.add(directory)
                    iso_path = _iso_path(directory, seen, directory=True)
                    image.add_directory(
                        iso_path, rr_name=directory[-1], joliet_path="/" + "/".join(directory)
                    )
            data = files["/".join(parts)]
            image.add_fp(
                io.BytesIO(data),
                len(data),
                _iso_path(parts, seen, directory=False),
                rr_name=parts[-1],
                joliet_path="/" + "/".join(parts),
                file_mode=FILE_MODE,
            )
        out = io.BytesIO()
        image.write_fp(out)
        image.close()
    return out.getvalue()


def _iso_path(parts: tuple[str, ...], seen: dict[str, str], *, directory: bool) -> str:
    names = [iso_name(part, directory=True) for part in parts[:-1]]
    names.append(iso_name(parts[-1], directory=directory))
    iso_path = "/" + "/".join(names)
    owner = seen.setdefault(iso_path, "/".join(parts))
    if owner != "/".join(parts):
        raise ValueError(f"{owner!r} and {'/'.join(parts)!r} have the same ISO 9660 name")
    return iso_path
