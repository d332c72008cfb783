"""Running a daemon's own tools: argv lists, a timeout, and the tool's message on failure."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence

from metadata_server.errors import ErrorCode, MetadataError

TIMEOUT = 30.0


class DaemonError(MetadataError):
    """A checker refused the configuration, or a reload failed; `detail` says why."""

    http_status = 502
    code = ErrorCode.DHCP_DAEMON


def find_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise DaemonError(f"{name} is not installed (not found in PATH, /usr/sbin or /sbin)")
    return path


async def run_tool(argv: Sequence[str], *, timeout: float = TIMEOUT) -> str:
    """Run `argv`; its combined output, or DaemonError with that output when it fails."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise DaemonError(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise DaemonError(f"{argv[0]} did not finish in {timeout:g} s") from None
    text = output.decode("utf-8", "replace").strip()
    if process.returncode != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        reason = " / ".join(lines[-3:]) if lines else f"exit status {process.returncode}"
        raise DaemonError(f"{argv[0].rsplit('/', 1)[-1]} refused it: {reason}")
    return text
