"""Dom0 of one comparison run: its network namespace with the guests' bridge, the server
process, and for the ISO method the xenstored stand-in and the xl stand-in's settings.

The server is a real process inside the Dom0 network namespace and in a PID namespace
of its own (`setpriv --pdeathsig KILL ip netns exec NS unshare --pid --fork
--kill-child ...`: it dies with the harness, even a killed one), so that
everything Dom0 runs (dnsmasq, xl, xenstore tools, losetup) is in one
place to measure, and dies with it. Both methods run `metadata-server serve`; for the
ISO method its `[iso]` settings point the fallback, with the default
`hypervisor="standin"`, at the xenstored stand-in (`fallback.xenstored`, a child
process of the harness) and at the xl stand-in wrapped by `compare.xl_hotplug`; with
`"xen"` at the host's own `xl` and xenstored.

`stop()` ends everything this module started, SIGTERM first, SIGKILL after a timeout;
`kill_now()` is the synchronous last resort for signal handlers and `finally` blocks.
Never touches a process it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from metadata_server_testbed.compare import procstats
from metadata_server_testbed.compare.admin import AdminApi
from metadata_server_testbed.compare.netns import ip_batch, run
from metadata_server_testbed.compare.plan import (
    GATEWAY,
    SUBNET,
    IsoLayout,
    ServerLayout,
    server_config,
)
from metadata_server_testbed.compare.procstats import Usage
from metadata_server_testbed.xen.xs_client import XsClient

log = logging.getLogger(__name__)

BRIDGE = "br0"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SERVER_READY = "admin API on unix:"
XENSTORED_READY = "XENSTORED_PATH="
# Even a harness killed with SIGKILL takes Dom0 and the guests with it (then
# `unshare --kill-child` takes their PID namespaces); only the namespaces and files stay.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


@dataclass(frozen=True)
class Dom0Snapshot:
    """Dom0's counters at one moment (see procstats for what each one is)."""

    at: float
    server: Usage  # every process in Dom0's PID namespace
    dnsmasq: Usage  # of those: dnsmasq's
    xenstored: Usage  # the xenstored stand-in (zero on Xen)
    last_pid: int
    counters: dict[str, int]


@dataclass
class Dom0Paths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.toml"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def dhcp(self) -> Path:
        return self.root / "dhcp"

    @property
    def iso(self) -> Path:
        return self.root / "iso"

    @property
    def xenstored(self) -> Path:
        return self.root / "xs"

    @property
    def xenstored_log(self) -> Path:
        return self.root / "xenstored.log"

    @property
    def xl_state(self) -> Path:
        return self.root / "xl"

    @property
    def hotplug(self) -> Path:
        """HOT/<domid>/ is shared with guest <domid> as its /run/xen."""
        return self.root / "hotplug"

    @property
    def xl_cost_log(self) -> Path:
        return self.root / "xl-cost.jsonl"


@dataclass
class Dom0:
    """One Dom0. `iso=True`: the server's ISO fallback is set up for the run (stand-ins
    or Xen); `dhcp`, `guest_api`: see plan.ServerLayout."""

    paths: Dom0Paths
    netns: str
    token: str
    iso: bool
    dhcp: bool
    guest_api: bool = True
    hypervisor: str = "standin"
    flow_timeout: float = 60.0
    connections: int = 0
    # On Xen the guests' vifs join a bridge of the host's own network namespace (the
    # toolstack's vif-bridge script runs there): Dom0 is that namespace, with bridges
    # named after `netns` (the run's prefix), instead of a namespace of its own.
    host_network: bool = False
    admin: AdminApi | None = None
    iso_admin: AdminApi | None = None
    _unshare: asyncio.subprocess.Process | None = None
    _xenstored: asyncio.subprocess.Process | None = None
    _xs: XsClient | None = None
    server_pid: int | None = None
    _namespace: str | None = None
    _netns_made: bool = False
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    # --- start -----------------------------------------------------------------------

    @property
    def bridge(self) -> str:
        return f"{self.netns}br" if self.host_network else BRIDGE

    @property
    def isolated_bridge(self) -> str:
        """On Xen: a bridge with nothing on it, for guests that must not reach Dom0."""
        return f"{self.netns}bi"

    def make_network(self) -> None:
        """Dom0's namespace with the bridge, holding the gateway address (on Xen: the
        bridges in the host's namespace)."""
        if self.host_network:
            ip_batch(
                [
                    f"link add {self.bridge} type bridge",
                    f"addr add {GATEWAY}/{SUBNET.prefixlen} dev {self.bridge}",
                    f"link set {self.bridge} up",
                    f"link add {self.isolated_bridge} type bridge",
                    f"link set {self.isolated_bridge} up",
                ]
            )
            self._netns_made = True
            return
        ip_batch([f"netns add {self.netns}"])
        self._netns_made = True
        ip_batch(
            [
                "link set lo up",
                f"link add {BRIDGE} type bridge",
                f"addr add {GATEWAY}/{SUBNET.prefixlen} dev {BRIDGE}",
                f"link set {BRIDGE} up",
            ],
            netns=self.netns,
        )

    async def start(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.root, 0o755)  # dnsmasq reads the DHCP files as its own user  # noqa: S103 (dnsmasq reads below it)
        await asyncio.to_thread(self.make_network)
        if self.iso and self.hypervisor == "standin":
            await self._start_xenstored()
        iso = None
        if self.iso:
            standin = self.hypervisor == "standin"
            iso = IsoLayout(
                directory=self.paths.iso,
                xl_command=tuple(self.xl_command()),
                xenstored_path=self.paths.xenstored / "socket" if standin else None,
                timeout=self.flow_timeout,
            )
        layout = ServerLayout(
            directory=self.paths.root,
            dhcp_directory=self.paths.dhcp,
            admin_socket=self.paths.admin_socket,
            dhcp=self.dhcp,
            guest_api=self.guest_api,
            iso=iso,
        )
        self.paths.config.write_text(server_config(layout, self.bridge))
        await self._start_server()
        # one pool for the short calls, one for the provisioning calls that last a flow
        self.admin = AdminApi(str(self.paths.admin_socket), self.token)
        if self.iso:
            self.iso_admin = AdminApi(
                str(self.paths.admin_socket), self.token, connections=self.connections
            )

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
        env["METADATA_SERVER_ADMIN_TOKEN"] = self.token
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return env

    def xl_command(self) -> list[str]:
        if self.hypervisor == "xen":
            return ["xl"]
        return [
            sys.executable,
            "-m",
            "metadata_server_testbed.compare.xl_hotplug",
            "--state-dir",
            str(self.paths.xl_state),
            "--hotplug-dir",
            str(self.paths.hotplug),
            "--cost-log",
            str(self.paths.xl_cost_log),
            "--",
        ]

    def _server_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "metadata_server",
            "serve",
            "--config",
            str(self.paths.config),
        ]

    async def _start_server(self) -> None:
        netns = [] if self.host_network else ["ip", "netns", "exec", self.netns]
        argv = [
            *DIE_WITH_PARENT,
            *netns,
            "unshare", "--pid", "--fork", "--kill-child",
            *self._server_argv(),
        ]  # fmt: skip
        with open(self.paths.server_log, "ab") as log_file:  # noqa: ASYNC230 (at start)
            self._unshare = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=self._environment(),
                cwd=self.paths.root,  # `-m` looks in the working directory first
                start_new_session=True,
            )
        await _wait_for_line(self.paths.server_log, SERVER_READY, self._unshare, "the server")
        children = procstats.children_of(self._unshare.pid)
        if not children:
            raise RuntimeError("the server process is gone")
        self.server_pid = children[0]
        self._namespace = procstats.pid_namespace(self.server_pid)
        log.info("Dom0 server pid %s in %s", self.server_pid, self.netns)

    async def _start_xenstored(self) -> None:
        argv = [
            *DIE_WITH_PARENT,
            sys.executable, "-m", "metadata_server_testbed.xen.xenstored",
            "--dir", str(self.paths.xenstored), "--log-level", "warning",
        ]  # fmt: skip
        with open(self.paths.xenstored_log, "ab") as log_file:  # noqa: ASYNC230 (at start)
            self._xenstored = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await _wait_for_line(
            self.paths.xenstored_log, XENSTORED_READY, self._xenstored, "xenstored"
        )
        self._xs = await XsClient.connect(self.paths.xenstored / "socket")

    # --- the toolstack's part (xl create / xl destroy), on the stand-in ---------------

    async def create_domain(self, domid: int, mac: str) -> Path | None:
        """What `xl create` does to xenstore: domain `domid` with a vif carrying `mac`.
        Returns the domain's own xenstored socket (None on Xen, where it is real)."""
        if self._xs is None:
            return None
        await self._xs.control("introduce", str(domid))
        await self._xs.write(f"/local/domain/0/backend/vif/{domid}/0/mac", mac.encode())
        return self.paths.xenstored / f"domain-{domid}.sock"

    async def destroy_domain(self, domid: int) -> None:
        """What a dying guest and `xl destroy` do to xenstore."""
        if self._xs is None:
            return
        await self._xs.rm(f"/local/domain/0/backend/vif/{domid}")
        await self._xs.control("release", str(domid))

    async def signal_keys(self) -> list[str]:
        """/local/domain/<N>/data/metadata-init keys still in xenstore (leftovers)."""
        if self._xs is None:
            return []
        found = []
        for domid in await self._xs.directory("/local/domain"):
            with contextlib.suppress(Exception):
                if "metadata-init" in await self._xs.directory(f"/local/domain/{domid}/data"):
                    found.append(f"/local/domain/{domid}/data/metadata-init")
        return found

    # --- measuring ---------------------------------------------------------------------

    def snapshot(self) -> Dom0Snapshot:
        assert self._namespace is not None
        assert self.server_pid is not None
        pids = procstats.processes_in(self._namespace)
        server = procstats.usage_of_all(pids)
        dnsmasq = procstats.usage_of_all(p for p in pids if procstats.command(p) == "dnsmasq")
        xenstored = (
            procstats.usage_of(self._xenstored.pid) if self._xenstored is not None else Usage()
        )
        return Dom0Snapshot(
            at=time.time(),
            server=server,
            dnsmasq=dnsmasq,
            xenstored=xenstored,
            last_pid=procstats.last_pid(self.server_pid),
            counters=procstats.netns_counters(None if self.host_network else self.netns),
        )

    def processes(self) -> list[int]:
        """Processes in Dom0's PID namespace now."""
        if self._namespace is None:
            return []
        return procstats.processes_in(self._namespace)

    def xl_costs(self) -> list[dict[str, object]]:
        path = self.paths.xl_cost_log
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # --- stop --------------------------------------------------------------------------

    async def stop(self) -> None:
        for client in (self.iso_admin, self.admin):
            if client is not None:
                await client.close()
        if self._xs is not None:
            with contextlib.suppress(Exception):
                await self._xs.close()
            self._xs = None
        if self._unshare is not None:
            self.exit_codes["server"] = await _terminate(self._unshare, self.server_pid)
            self._unshare = None
        if self._xenstored is not None:
            self.exit_codes["xenstored"] = await _terminate(self._xenstored, self._xenstored.pid)
            self._xenstored = None
        if self._netns_made:
            await asyncio.to_thread(self._remove_network)

    def _remove_network(self) -> None:
        if self.host_network:
            for bridge in (self.bridge, self.isolated_bridge):
                run(["ip", "link", "delete", bridge], check=False)
        else:
            run(["ip", "netns", "delete", self.netns], check=False)
        self._netns_made = False

    def kill_now(self) -> None:
        """SIGKILL everything still running and delete the namespace (no waiting)."""
        for process in (self._unshare, self._xenstored):
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if self._netns_made:
            self._remove_network()


async def _wait_for_line(
    path: Path, marker: str, process: asyncio.subprocess.Process, what: str
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""  # noqa: ASYNC240 (a small log, polled)
        if marker in text:
            return
        if process.returncode is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{text[-3000:]}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not start in {START_TIMEOUT:g} s")


async def _terminate(process: asyncio.subprocess.Process, pid: int | None) -> int | None:
    """SIGTERM to `pid` (the real program; `process` may be its unshare wrapper), then
    SIGKILL to the whole process group after STOP_TIMEOUT."""
    if process.returncode is None and pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        log.warning("pid %s did not stop in %g s; killing it", pid, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return await process.wait()
