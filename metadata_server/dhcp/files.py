"""Writing DHCP files safely: every file of a set is written to a temporary name beside
its target and flushed first; only when all of them are written are they renamed into
place. An unwritable directory or a full disk leaves every old file as it was. The files
name every guest: they are written 0600, whatever the umask."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from metadata_server.errors import ErrorCode, MetadataError


class DhcpWriteError(MetadataError):
    http_status = 500
    code = ErrorCode.DHCP_WRITE


def replace_files(directory: Path, files: Mapping[str, str], mode: int = 0o600) -> None:
    staged: list[tuple[Path, Path]] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            target = directory / name
            temporary = directory / f".{name}.new"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            staged.append((temporary, target))
            os.fchmod(fd, mode)  # a file left by a crash keeps its old mode otherwise
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as exc:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise DhcpWriteError(
            f"cannot write the DHCP files in {directory}: {exc.strerror}"
        ) from None
    for temporary, target in staged:
        os.replace(temporary, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_files(directory: Path, names: tuple[str, ...]) -> dict[str, str] | None:
    """The files as they are now, or None when one is missing (nothing installed yet)."""
    try:
        return {name: (directory / name).read_text(encoding="utf-8") for name in names}
    except (OSError, UnicodeDecodeError):
        return None
