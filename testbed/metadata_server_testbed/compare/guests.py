"""The simulated guests of one run: their namespaces, their overlays on the shared image,
and booting them.

Each guest gets a network namespace with `eth0` (its MAC) on Dom0's bridge (the host end
`vg<N>` lives in Dom0's namespace), a directory with its overlay (upper/, work/,
merged/) on the shared image, and `xen/`, bound at /run/xen inside it: its xenstored
socket (a hard link to the stand-in's per-domain socket), the device numbers of the disk
Dom0 hot-plugs, and the stage its init reached. Namespaces and links for all guests are
made by one `ip -batch` each, not by a handful of `ip` processes per guest.

`boot()` runs the guest's init (`compare-boot`) chrooted in new mount, UTS and PID
namespaces inside its network namespace; killing the process kills the whole guest
(`unshare --kill-child`), its mounts die with its mount namespace. `destroy()` deletes
every namespace and directory this module made. It never touches other namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from metadata_server_testbed.compare.cpu_share import GuestCpu
from metadata_server_testbed.compare.dom0 import DIE_WITH_PARENT
from metadata_server_testbed.compare.image import BOOT
from metadata_server_testbed.compare.netns import ip_batch
from metadata_server_testbed.compare.plan import GuestPlan
from metadata_server_testbed.compare.rootfs import Overlay, Rootfs, environment

log = logging.getLogger(__name__)

XEN_DIR = "/run/xen"  # inside the guest
XENSTORED_SOCKET = "xenstored.sock"
OUTPUT_LIMIT = 4000  # characters of a guest's output kept for the report


@dataclass
class GuestSlot:
    plan: GuestPlan
    netns: str
    directory: Path

    @property
    def overlay(self) -> Overlay:
        return Overlay(self.directory / "upper", self.directory / "work", self.directory / "merged")

    @property
    def xen(self) -> Path:
        return self.directory / "xen"

    def stage(self) -> str:
        try:
            return (self.xen / "stage").read_text().strip()
        except OSError:
            return ""


@dataclass
class BootOutcome:
    started: float  # wall clock (time.time()) when the guest was started: its boot start
    returncode: int | None  # None: killed by the harness (timeout or a fault)
    output: str
    killed: str = ""  # why the harness killed it


@dataclass
class Fleet:
    image: Rootfs
    directory: Path
    dom0_netns: str
    prefix: str  # unique to the run: namespace names start with it
    plans: Sequence[GuestPlan]
    cpu: GuestCpu
    slots: list[GuestSlot] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)
    _running: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    def create(self, hotplug: Path | None = None) -> None:
        """Namespaces, links and directories for every guest. With `hotplug` (the ISO
        method's HOT dir), HOT/<domid> is the guest's xen/ directory."""
        self.slots = [
            GuestSlot(plan, f"{self.prefix}g{plan.index}", self.directory / str(plan.index))
            for plan in self.plans
        ]
        for slot in self.slots:
            overlay = Overlay.under(slot.directory)
            if hotplug is not None:
                target = hotplug / str(slot.plan.domid)
                target.mkdir(parents=True, exist_ok=True)
                slot.xen.symlink_to(target)
            else:
                slot.xen.mkdir(parents=True, exist_ok=True)
            _write_identity(overlay, slot.plan)
        self._made = [slot.netns for slot in self.slots]
        ip_batch(f"netns add {name}" for name in self._made)
        links = [
            f"link add vg{slot.plan.index} master br0 up type veth peer name eth0 "
            f"address {slot.plan.mac} netns {slot.netns}"
            for slot in self.slots
        ]
        ip_batch(links, netns=self.dom0_netns)
        log.info("%d guest namespaces on %s", len(self.slots), self.dom0_netns)

    def boot_argv(self, slot: GuestSlot, options: Sequence[str]) -> list[str]:
        return self.image.argv(
            [BOOT, *options],
            netns=slot.netns,
            hostname="template",
            overlay=slot.overlay,
            binds=[(slot.xen.resolve(), XEN_DIR)],
        )

    async def boot(
        self,
        slot: GuestSlot,
        options: Sequence[str],
        *,
        timeout: float,
        kill_at_stage: str | None = None,
        env: dict[str, str] | None = None,
    ) -> BootOutcome:
        """Start the guest and wait for its init to end (at most `timeout` s). With
        `kill_at_stage`, the guest is killed once its init reports that stage."""
        argv = [*DIE_WITH_PARENT, *self.boot_argv(slot, options)]
        started = time.time()
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment(env),
            **self.cpu.spawn_options(),
        )
        self._running[slot.plan.index] = process
        killed = ""
        try:
            output_task = asyncio.ensure_future(process.communicate())
            deadline = time.monotonic() + timeout
            while not output_task.done():
                if kill_at_stage is not None and slot.stage() == kill_at_stage:
                    killed = f"killed at stage {kill_at_stage}"
                    _kill(process)
                    break
                if time.monotonic() > deadline:
                    killed = f"timeout after {timeout:g} s (stage {slot.stage() or 'none'})"
                    _kill(process)
                    break
                await asyncio.wait({output_task}, timeout=0.05)
            stdout, _ = await output_task
        finally:
            if process.returncode is None:
                _kill(process)
                await process.wait()
            self._running.pop(slot.plan.index, None)
        text = (stdout or b"").decode("utf-8", "replace")[-OUTPUT_LIMIT:]
        return BootOutcome(started, None if killed else process.returncode, text, killed)

    def kill_all(self) -> None:
        for process in list(self._running.values()):
            _kill(process)

    def destroy(self) -> None:
        """Kill guests still running, delete their namespaces and directories."""
        self.kill_all()
        if self._made:
            with contextlib.suppress(RuntimeError):
                ip_batch(f"netns delete {name}" for name in self._made)
            self._made = []
        shutil.rmtree(self.directory, ignore_errors=True)


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _write_identity(overlay: Overlay, plan: GuestPlan) -> None:
    """What the guest's kernel would show in /sys: its Xen UUID and its MAC (its /sys is
    a plain directory of its root)."""
    files = {
        "/sys/hypervisor/uuid": plan.uuid + "\n",
        "/sys/class/net/eth0/address": plan.mac + "\n",
        "/sys/class/net/lo/address": "00:00:00:00:00:00\n",
    }
    for name, text in files.items():
        path = overlay.file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    overlay.file("/sys/class/net/eth0/device").mkdir(parents=True, exist_ok=True)
