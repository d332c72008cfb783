"""What can go wrong talking to Xen: one exception type, `XenError`, and its cases.

Each message says what failed in words an operator can act on: the command line and its
stderr for a failed command, the domain and key for a guest that did not signal. Pure:
no I/O. Messages never carry a nonce or anything from a guest's configuration.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from metadata_server.errors import ErrorCode, Unavailable

MAX_STDERR = 2000  # characters of a command's stderr kept in the message


class XenError(Unavailable):
    """Xen (xl, xenstore) did not do what the fallback needed."""

    code = ErrorCode.XEN


class XenCommandFailed(XenError):
    """A command could not run, timed out, or exited non-zero."""

    def __init__(
        self,
        argv: Sequence[str],
        reason: str,
        *,
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()[:MAX_STDERR]
        detail = f"`{shlex.join(self.argv)}` {reason}"
        if self.stderr:
            detail += f": {self.stderr}"
        super().__init__(detail)


class GuestSignalTimeout(XenError):
    """The guest did not signal completion in time."""

    code = ErrorCode.XEN_GUEST_TIMEOUT


class GuestGone(XenError):
    """The guest died or was destroyed while Dom0 waited for it."""

    code = ErrorCode.XEN_GUEST_GONE


class GuestReportedFailure(XenError):
    """The guest signalled that applying its configuration failed; `reason` is its text."""

    code = ErrorCode.XEN_GUEST_FAILED

    def __init__(self, domid: int, reason: str) -> None:
        self.domid = domid
        self.reason = reason
        super().__init__(f"domain {domid} reported a failure: {reason or '(no reason given)'}")
