"""The directory on Dom0 that holds the ISO files while they are attached to guests.

The directory is 0700 and every ISO in it 0600, owned by the server: an ISO carries
the guest's password hash and user-data. An ISO is written to a temporary name and
renamed into place, so a reader (xl, blkback) never sees half of one; its name,
`<domid>-<mac with dashes>.iso`, says whose it is, so leftovers of a crash can be
matched to their domain at the next start.

Only files with those names are ever removed; nothing else in the directory is touched.
Failures (an unwritable directory, a full disk) are `IsoStoreError` naming the path and
the system's reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from metadata_server.errors import ErrorCode, Unavailable, os_reason

log = logging.getLogger(__name__)

SUFFIX = ".iso"
PARTIAL = ".part"
_NAME_RE = re.compile(r"^([0-9]{1,5})-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})\.iso(\.part)?$")


class IsoStoreError(Unavailable):
    """The ISO directory or an ISO file in it could not be made, written or removed."""

    code = ErrorCode.ISO_STORE


@dataclass(frozen=True)
class IsoFile:
    path: Path
    domid: int
    mac: str
    partial: bool  # a write that never finished


class IsoDirectory:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))  # xl is given the ISO's absolute path

    def name_for(self, domid: int, mac: str) -> str:
        return f"{domid}-{mac.replace(':', '-')}{SUFFIX}"

    def prepare(self) -> None:
        """Create the directory (0700) if missing; make an existing one 0700. Refuses a
        symlink or a directory owned by someone else."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.path.mkdir(mode=0o700)
            info = os.lstat(self.path)
            if not stat.S_ISDIR(info.st_mode):
                raise IsoStoreError(f"the ISO directory {self.path} is not a directory")
            if info.st_uid != os.geteuid():
                raise IsoStoreError(f"the ISO directory {self.path} belongs to uid {info.st_uid}")
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(self.path, 0o700)
        except OSError as error:
            raise IsoStoreError(
                f"cannot prepare the ISO directory {self.path}: {os_reason(error)}"
            ) from None

    def write(self, domid: int, mac: str, data: bytes) -> Path:
        """Write the ISO (0600) and return its path; on any failure nothing is left."""
        self.prepare()
        final = self.path / self.name_for(domid, mac)
        partial = final.with_name(final.name + PARTIAL)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(partial, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask or an earlier file said
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(partial, final)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise IsoStoreError(f"cannot write the ISO {final}: {os_reason(error)}") from None
        log.debug("wrote %s (%d bytes)", final, len(data))
        return final

    def remove(self, path: Path) -> None:
        """Remove one ISO (or its partial file); a missing file is fine."""
        if not _NAME_RE.fullmatch(path.name) or path.parent != self.path:
            raise ValueError(f"{path} is not an ISO of this directory")
        for candidate in (path, path.with_name(path.name + PARTIAL)):
            try:
                candidate.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                detail = f"cannot remove the ISO {candidate}: {os_reason(error)}"
                raise IsoStoreError(detail) from None

    def files(self) -> list[IsoFile]:
        """The ISOs (and partial writes) in the directory, by name; [] if it is missing."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        except OSError as error:
            detail = f"cannot list the ISO directory {self.path}: {os_reason(error)}"
            raise IsoStoreError(detail) from None
        found = []
        for name in names:
            match = _NAME_RE.fullmatch(name)
            if match:
                found.append(
                    IsoFile(
                        self.path / name,
                        int(match.group(1)),
                        match.group(2).replace("-", ":"),
                        partial=match.group(3) is not None,
                    )
                )
        return found
