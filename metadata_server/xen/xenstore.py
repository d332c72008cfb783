"""xenstore through the real xenstore-utils commands (xenstore-read, -write, -rm, -chmod,
-exists, -ls and a long-running xenstore-watch), run as Dom0.

When `xenstored_path` is set, the commands get XENSTORED_PATH in their environment and
talk to that socket (the stand-in in tests and the comparison harness); otherwise
libxenstore finds the host's xenstored. What the tools print is parsed here and nowhere
else. Must not decide anything about guests: that is `xen.py`'s job.

Facts about the tools (Xen 4.17, tools/xenstore/xenstore_client.c): they report a failed
read only as "couldn't read path", so a missing and an unreadable node look alike;
`xenstore-exists` exits 1 silently for a missing node; `xenstore-ls -f` prints
`<full path> = "<value>"` per node below a path, values escaped like C strings;
`xenstore-watch` prints each event's path on its own line and flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Sequence

from metadata_server.xen.commands import CommandResult, run_command
from metadata_server.xen.errors import XenCommandFailed

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
# xenstore-ls escapes: \xHH and \ooo, ASCII digits only (str.isdigit() takes any script's).
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_OCTAL3 = re.compile(r"[0-7]{3}")


def unescape(value: str) -> str:
    """Undo xenstore-ls's escaping: \\t \\n \\r \\\\, \\xNN and \\NNN (octal)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "\\" or i + 1 == len(value):
            out.append(char)
            i += 1
            continue
        nxt = value[i + 1]
        simple = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x" and _HEX2.fullmatch(value[i + 2 : i + 4]):
            out.append(chr(int(value[i + 2 : i + 4], 16)))
            i += 4
        elif _OCTAL3.fullmatch(value[i + 1 : i + 4]):
            out.append(chr(int(value[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def parse_ls_flat(output: str) -> dict[str, str | None]:
    """`xenstore-ls -f` output → {path: value}; None where the node could not be read."""
    entries: dict[str, str | None] = {}
    for line in output.splitlines():
        path, sep, rest = line.partition(' = "')
        if sep and rest.endswith('"'):
            entries[path] = unescape(rest[:-1])
        elif line.endswith(":"):
            entries[line[:-1]] = None
    return entries


class XenstoreWatch:
    """A running `xenstore-watch`: each call to `next_event` returns one event's path."""

    def __init__(self, proc: asyncio.subprocess.Process, argv: Sequence[str]) -> None:
        self._proc = proc
        self._argv = list(argv)

    async def next_event(self) -> str:
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            stderr = b""
            if self._proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_TIMEOUT):
                        stderr = await self._proc.stderr.read()
            raise XenCommandFailed(
                self._argv, "stopped unexpectedly", stderr=stderr.decode("utf-8", "replace")
            )
        return line.decode("utf-8", "replace").rstrip("\n")

    async def stop(self) -> None:
        if self._proc.returncode is None:
            # xenstore-watch never exits by itself (and spins if xenstored goes away)
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self._proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()


class XenstoreTools:
    """The xenstore-* commands, with one environment and one timeout."""

    def __init__(
        self,
        *,
        xenstored_path: str | None = None,
        bin_dir: str | None = None,
        timeout: float = 10.0,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.xenstored_path = xenstored_path
        self.bin_dir = bin_dir
        self.timeout = timeout
        self.slots = slots  # shared with xl's commands (XenHost)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.xenstored_path is not None:
            env["XENSTORED_PATH"] = self.xenstored_path
        return env

    def argv(self, tool: str, *args: str) -> list[str]:
        command = os.path.join(self.bin_dir, tool) if self.bin_dir else tool
        return [command, *args]

    async def read(self, path: str) -> str | None:
        """The node's value, or None when it is missing (or unreadable)."""
        argv = self.argv("xenstore-read", "-R", path)
        result = await self._command(argv, check=False)
        if result.returncode == 0:
            return result.stdout.decode("utf-8", "replace")
        if result.returncode == 1 and "couldn't read path" in result.stderr:
            return None
        raise XenCommandFailed(argv, f"failed (exit {result.returncode})", stderr=result.stderr)

    async def exists(self, path: str) -> bool:
        argv = self.argv("xenstore-exists", path)
        result = await self._command(argv, check=False)
        if result.returncode == 0:
            return True
        if result.returncode == 1 and not result.stderr.strip():
            return False
        raise XenCommandFailed(argv, f"failed (exit {result.returncode})", stderr=result.stderr)

    async def write(self, path: str, value: str) -> None:
        # -R: the value is written as given, not unescaped
        await self._run("xenstore-write", "-R", path, value)

    async def rm(self, path: str) -> None:
        await self._run("xenstore-rm", path)

    async def chmod(self, path: str, *perms: str) -> None:
        await self._run("xenstore-chmod", path, *perms)

    async def list_values(self, path: str) -> dict[str, str | None] | None:
        """Every node below `path` → its value (`xenstore-ls -f`); None if `path` is missing."""
        argv = self.argv("xenstore-ls", "-f", path)
        result = await self._command(argv, check=False)
        if result.returncode == 0:
            return parse_ls_flat(result.stdout.decode("utf-8", "replace"))
        if "No such file or directory" in result.stderr and "xs_directory" in result.stderr:
            return None
        raise XenCommandFailed(argv, f"failed (exit {result.returncode})", stderr=result.stderr)

    async def _run(self, tool: str, *args: str) -> None:
        await self._command(self.argv(tool, *args))

    async def _command(self, argv: list[str], check: bool = True) -> CommandResult:
        return await run_command(
            argv, timeout=self.timeout, env=self.env, check=check, slots=self.slots
        )

    @contextlib.asynccontextmanager
    async def watch(self, *paths: str) -> AsyncIterator[XenstoreWatch]:
        """A `xenstore-watch` on `paths` for the duration of the block, then stopped."""
        argv = self.argv("xenstore-watch", *paths)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
            )
        except OSError as error:
            raise XenCommandFailed(argv, f"could not be run ({error.strerror or error})") from None
        watch = XenstoreWatch(proc, argv)
        try:
            yield watch
        finally:
            await watch.stop()
