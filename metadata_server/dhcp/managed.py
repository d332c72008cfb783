"""dnsmasq run by the server itself on the bridge (`dhcp.manage = true`): the embedded
default for one Dom0. Started with the server, restarted with back-off when it dies,
sent SIGHUP when only reservations changed, restarted when its options changed, and
stopped with the server. DNS is off in this dnsmasq (`--port=0`); it only does DHCP.

dnsmasq drops root after start and re-reads the hosts file on SIGHUP as that user, so
it runs as its own account (`dnsmasq`, which Debian's package creates; `nobody` only when
there is none, with a warning) and that account owns the hosts file (0600). Every other
file stays root's and 0600, the lease file included (dnsmasq would create it 0644), and
the directory is 0711: others may pass through it, never list or read what is in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import stat
from collections.abc import Sequence
from pathlib import Path

from metadata_server.dhcp.commands import DaemonError, find_binary

log = logging.getLogger(__name__)
MIN_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STOP_TIMEOUT = 5.0
ACCOUNTS = ("dnsmasq", "nobody")  # the first that exists runs dnsmasq
HOSTS_FILE = "dnsmasq-hosts"
LEASE_FILE = "dnsmasq.leases"


def dnsmasq_account() -> pwd.struct_passwd:
    for name in ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise DaemonError(f"none of the accounts {', '.join(ACCOUNTS)} exists to run dnsmasq as")


class ManagedDnsmasq:
    def __init__(
        self,
        directory: Path,
        interfaces: Sequence[str],
        *,
        lease_script: Path | None = None,
        log_each_exchange: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.interfaces = tuple(interfaces)
        self.lease_script = lease_script
        self.log_each_exchange = log_each_exchange
        self.extra_args = tuple(extra_args)
        self.process: asyncio.subprocess.Process | None = None
        self.account: pwd.struct_passwd | None = None
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None  # ends when dnsmasq does
        self._stopping = False
        self._restart_now = asyncio.Event()

    def argv(self) -> list[str]:
        argv = [
            find_binary("dnsmasq"),
            "--keep-in-foreground",
            "--conf-file=" + str(self.directory / "dnsmasq.conf"),
            "--dhcp-hostsfile=" + str(self.directory / HOSTS_FILE),
            "--dhcp-leasefile=" + str(self.directory / LEASE_FILE),
            "--port=0",
            "--bind-dynamic",
            "--log-facility=-",
            "--pid-file=",
        ]
        if self.account is not None:
            argv.append(f"--user={self.account.pw_name}")
        if self.log_each_exchange:
            argv.append("--log-dhcp")  # ~30 lines per guest: only at log_level = debug
        argv += [f"--interface={name}" for name in self.interfaces]
        if self.lease_script is not None:
            argv.append(f"--dhcp-script={self.lease_script}")
        return argv + list(self.extra_args)

    def _prepare_files(self) -> None:
        """Before each start and SIGHUP: the directory 0711, the lease file 0600 root's,
        the hosts file (just replaced, so root's again) 0600 and dnsmasq's account's."""
        account = self.account
        if account is not None:
            blocked = unreachable_for(account, self.directory)
            if blocked is not None:
                raise DaemonError(
                    f"dnsmasq runs as {account.pw_name} and re-reads its hosts file as that "
                    f"user, but cannot pass through {blocked} (mode "
                    f"{stat.S_IMODE(blocked.stat().st_mode):04o}): give others search "
                    f"permission there (chmod o+x {blocked}) or set dhcp.directory elsewhere"
                )
        try:
            self.directory.chmod(0o711)
            fd = os.open(self.directory / LEASE_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            hosts = self.directory / HOSTS_FILE
            if account is not None and hosts.exists():
                os.chown(hosts, account.pw_uid, -1, follow_symlinks=False)
                os.chmod(hosts, 0o600, follow_symlinks=False)
        except OSError as exc:
            raise DaemonError(
                f"cannot prepare dnsmasq's files in {self.directory}: {exc}"
            ) from None

    async def start(self) -> None:
        # dnsmasq changes user only when started as root; otherwise it stays ours.
        self.account = dnsmasq_account() if os.geteuid() == 0 else None
        if self.account is not None and self.account.pw_name != ACCOUNTS[0]:
            log.warning(
                "there is no %s account: dnsmasq runs as %s, and so can anything else "
                "that runs as %s read the guests' reservations",
                ACCOUNTS[0],
                self.account.pw_name,
                self.account.pw_name,
            )
        self._restart_now.clear()  # a reload asked for before the start is this start
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="dnsmasq-supervisor")

    async def _spawn(self) -> None:
        self._prepare_files()
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
        self._log_task = asyncio.create_task(_forward_log(self.process.stdout), name="dnsmasq-log")
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
        self._prepare_files()
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


_TROUBLE = ("warning", "fail", "error", "illegal", "cannot", "bad ", "no address")


async def _forward_log(stream: asyncio.StreamReader) -> None:
    """dnsmasq's own log into ours: at debug, but for lines that say something is wrong
    (which come at warning); a boot storm's exchanges never fill the log at info."""
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").rstrip()
        lowered = text.lower()
        level = logging.WARNING if any(word in lowered for word in _TROUBLE) else logging.DEBUG
        log.log(level, "dnsmasq: %s", text)


def unreachable_for(account: pwd.struct_passwd, directory: Path) -> Path | None:
    """The first directory above `directory` (itself excluded: it is made 0711) that
    `account` may not pass through, or None. Owner, group and other bits as the kernel
    reads them; ACLs are not looked at."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in directory.resolve().parents:
        info = parent.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return parent
    return None
