"""What can go wrong launching or destroying a guest, beyond bad input and conflicts
(`InvalidInput`, `Conflict`): a tool missing on this Dom0, no address left in the
subnet, a guest this Dom0 did not launch, a guest that reported failure, and a cleanup
(rollback or destroy) that could not undo everything. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metadata_server.errors import ErrorCode, MetadataError, Unavailable


class ToolMissing(Unavailable):
    """A program or file the launch needs is not on this Dom0 (xl, qemu-img, pvgrub2)."""

    code = ErrorCode.TOOL_MISSING


class NoFreeAddress(MetadataError):
    """Every address of the subnet is taken (reserved, the gateway, Dom0's)."""

    http_status = 409
    code = ErrorCode.CONFLICT


class LaunchInProgress(MetadataError):
    """A launch directory for the name exists: a launch is running, or a crash left it."""

    http_status = 409
    code = ErrorCode.CONFLICT


class NotLaunched(MetadataError):
    """`vm destroy` of a guest without a launch record here: this Dom0 did not launch it."""

    http_status = 409
    code = ErrorCode.NOT_LAUNCHED


class LaunchFailed(MetadataError):
    """The launched guest reported `failed`, or its record went away while Dom0 waited."""

    http_status = 500
    code = ErrorCode.LAUNCH_FAILED


class CleanupIncomplete(MetadataError):
    """A rollback or a destroy that could not undo everything: `problems` lists each
    step that failed (every other step was still done)."""

    http_status = 500
    code = ErrorCode.CLEANUP_INCOMPLETE

    def __init__(self, detail: str, problems: Sequence[str]) -> None:
        super().__init__(f"{detail}; left behind: {'; '.join(problems)}")
        self.problems = list(problems)

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["problems"] = self.problems
        return body
