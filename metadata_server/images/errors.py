"""What can go wrong with master images: bad input (`ImageError`, the admin can fix it),
a path that is not a prepared master (`NotAMaster`, which `vm launch` will refuse as
well), and a tool that is missing or failed (`ImageToolFailed`). Pure: no I/O."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from metadata_server.errors import ErrorCode, MetadataError

MAX_STDERR = 600  # characters of a tool's stderr kept in a message


class ImageError(MetadataError):
    """A source image, master, delta or output path that cannot be used as given."""

    http_status = 400
    code = ErrorCode.IMAGE


class NotAMaster(ImageError):
    """A path that is not a master made by `image prepare`, or one changed since."""


class ImageToolFailed(MetadataError):
    """qemu-img, losetup, mount or another tool is missing, failed or timed out."""

    http_status = 500
    code = ErrorCode.IMAGE_TOOL

    def __init__(
        self, detail: str, *, argv: Sequence[str] = (), stderr: str = "", returncode: int = 0
    ) -> None:
        super().__init__(detail)
        self.argv = list(argv)
        self.stderr = stderr
        self.returncode = returncode


def command_failed(argv: Sequence[str], returncode: int, stderr: str) -> ImageToolFailed:
    """The error for `argv` exiting `returncode`: its last stderr lines, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = " / ".join(lines[-3:])[:MAX_STDERR] if lines else f"exit status {returncode}"
    detail = f"`{shlex.join(argv)}` failed: {reason}"
    return ImageToolFailed(detail, argv=argv, stderr=stderr, returncode=returncode)
