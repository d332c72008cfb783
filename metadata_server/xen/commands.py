"""Run one Xen command line (xl, xenstore-*) with a timeout, the asyncio way.

argv lists only, never a shell; stdin is /dev/null; a command that outlives its timeout,
or whose caller is cancelled, is killed and reaped before this returns. Failures become
`XenCommandFailed` naming the command and its stderr. Knows nothing about what the
commands mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metadata_server.xen.errors import XenCommandFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    slots: asyncio.Semaphore | None = None,
) -> CommandResult:
    """Run `argv` to completion; with `check`, a non-zero exit raises XenCommandFailed.
    With `slots`, the command waits for one (a queue, not a timeout: a hundred ISO flows
    at once each run a few commands, and xenstored answers them one after the other);
    its timeout counts from its start."""
    if slots is None:
        return await _run(argv, timeout=timeout, env=env, check=check)
    async with slots:
        return await _run(argv, timeout=timeout, env=env, check=check)


async def _run(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None, check: bool
) -> CommandResult:
    log.debug("running %s", argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as error:
        raise XenCommandFailed(argv, f"could not be run ({error.strerror or error})") from None
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        raise XenCommandFailed(argv, f"timed out after {timeout:g} s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: leave no process behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    result = CommandResult(
        tuple(argv), proc.returncode or 0, stdout, stderr.decode("utf-8", "replace")
    )
    if check and result.returncode != 0:
        raise XenCommandFailed(
            argv,
            f"failed (exit {result.returncode})",
            returncode=result.returncode,
            stderr=result.stderr,
        )
    return result
