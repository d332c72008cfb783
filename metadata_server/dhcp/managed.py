"""dnsmasq run by the server itself on the bridge (`dhcp.manage = true`): the embedded
default for one Dom0. Started with the server, restarted with back-off when it dies,
sent SIGHUP when only reservations changed, restarted when its options changed, and
stopped with the server. DNS is off in this dnsmasq (`--port=0`); it only does DHCP.

dnsmasq drops root after start; on SIGHUP it re-reads the hosts file as its own user,
so the DHCP directory must be readable by it (the server makes it 0755).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from metadata_server.dhcp.commands import DaemonError, find_binary

log = logging.getLogger(__name__)
MIN_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STOP_TIMEOUT = 5.0


class ManagedDnsmasq:
    def __init__(
        self,
        directory: Path,
        interfaces: Sequence[str],
        *,
        lease_script: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.interfaces = tuple(interfaces)
        self.lease_script = lease_script
        self.extra_args = tuple(extra_args)
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._restart_now = asyncio.Event()

    def argv(self) -> list[str]:
        argv = [
            find_binary("dnsmasq"),
            "--keep-in-foreground",
            "--conf-file=" + str(self.directory / "dnsmasq.conf"),
            "--dhcp-hostsfile=" + str(self.directory / "dnsmasq-hosts"),
            "--dhcp-leasefile=" + str(self.directory / "dnsmasq.leases"),
            "--port=0",
            "--bind-dynamic",
            "--log-facility=-",
            "--log-dhcp",
            "--pid-file=",
        ]
        argv += [f"--interface={name}" for name in self.interfaces]
        if self.lease_script is not None:
            argv.append(f"--dhcp-script={self.lease_script}")
        return argv + list(self.extra_args)

    async def start(self) -> None:
        self.directory.chmod(0o755)
        self._restart_now.clear()  # a reload asked for before the start is this start
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="dnsmasq-supervisor")

    async def _spawn(self) -> None:
        argv = self.argv()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise DaemonError(f"cannot start dnsmasq: {exc.strerror}") from None
        assert self.process.stdout is not None
        asyncio.create_task(_forward_log(self.process.stdout), name="dnsmasq-log")
        log.info("started dnsmasq (pid %s) on %s", self.process.pid, ", ".join(self.interfaces))

    async def _supervise(self) -> None:
        backoff = MIN_BACKOFF
        while not self._stopping:
            assert self.process is not None
            waiter = asyncio.create_task(self.process.wait())
            restart = asyncio.create_task(self._restart_now.wait())
            done, _ = await asyncio.wait({waiter, restart}, return_when=asyncio.FIRST_COMPLETED)
            if self._stopping:
                restart.cancel()
                waiter.cancel()
                return
            if restart in done:
                self._restart_now.clear()
                await self._terminate()
                waiter.cancel()
                backoff = MIN_BACKOFF
            else:
                restart.cancel()
                log.error(
                    "dnsmasq exited with %s; restarting in %.1f s", self.process.returncode, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            if self._stopping:
                return
            try:
                await self._spawn()
                self.restarts += 1
            except DaemonError as exc:
                log.error("%s", exc.detail)

    async def reload(self, *, restart: bool) -> None:
        process = self.process
        if restart or process is None or process.returncode is not None:
            self._restart_now.set()
            return
        process.send_signal(signal.SIGHUP)

    async def _terminate(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        self._stopping = True
        self._restart_now.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()
        log.info("stopped dnsmasq")


async def _forward_log(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        log.info("dnsmasq: %s", line.decode("utf-8", "replace").rstrip())
