"""Real Xen domUs as the comparison's guests (`--hypervisor xen`, run in a Xen Dom0).

Each guest is a PV domU whose disk is a qcow2 delta of one master image (the master
holds the project's guest boot script, installed as a user installs it), its kernel
and initramfs given by path, its vif on one of the run's bridges with the MAC the guest
is registered by, and its uuid the plan's. Boot start is the moment before `xl create`;
the guest's own CPU is the `Time(s)` that `xl list` shows for its domain just before
it is destroyed. `xl create` runs one guest at a time (libxl times out waiting for a
qdisk device model when several start at once on a busy Dom0); the guests then boot
side by side.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from metadata_server_testbed.compare.plan import GuestPlan

CREATE_TIMEOUT = 300.0
COMMAND_TIMEOUT = 60.0
# libxl's own timeouts waiting for Dom0's side of a new guest (a busy Dom0 starts the
# qdisk device model, or runs vif-bridge, late): worth one more `xl create`
LATE_IN_DOM0 = ("device model did not start", "Post DM startup configs failed", "timeout")
RETRY_PAUSE = 5.0


@dataclass(frozen=True)
class XenImage:
    """What every guest of the run boots: the master disk, the kernel, the initramfs."""

    master: Path
    kernel: Path
    ramdisk: Path | None = None
    memory_mib: int = 256
    iso_extra: str = ""  # kernel command line words for the ISO method's guests

    def problems(self) -> list[str]:
        paths = [("--xen-image", self.master), ("--xen-kernel", self.kernel)]
        if self.ramdisk is not None:
            paths.append(("--xen-ramdisk", self.ramdisk))
        return [f"{flag} {path} does not exist" for flag, path in paths if not path.is_file()]


def xl(*args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["xl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def parse_xl_list(text: str) -> dict[str, tuple[int, float]]:
    """`xl list`'s table: (domid, CPU seconds) by domain name."""
    found: dict[str, tuple[int, float]] = {}
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) >= 6 and words[1].isdigit():
            found[words[0]] = (int(words[1]), float(words[-1]))
    return found


def domains() -> dict[str, tuple[int, float]]:
    """Running domains by name: (domid, CPU seconds)."""
    return parse_xl_list(xl("list").stdout)


@dataclass
class XenGuest:
    plan: GuestPlan
    name: str
    directory: Path
    bridge: str
    image: XenImage
    extra: str = ""  # more kernel command line
    domid: int | None = None
    started: float = 0.0  # time.time() just before `xl create`
    cpu_s: float = 0.0
    error: str = ""
    retried: str = ""  # why `xl create` ran twice ("" if it did not)

    @property
    def delta(self) -> Path:
        return self.directory / f"{self.name}.qcow2"

    @property
    def config(self) -> Path:
        return self.directory / f"{self.name}.cfg"

    def xl_config(self) -> str:
        ramdisk = f'ramdisk = "{self.image.ramdisk}"\n' if self.image.ramdisk else ""
        return (
            f'name = "{self.name}"\ntype = "pv"\nuuid = "{self.plan.uuid}"\n'
            f"memory = {self.image.memory_mib}\nvcpus = 1\n"
            f'kernel = "{self.image.kernel}"\n{ramdisk}'
            f'extra = "root=/dev/xvda ro console=hvc0 systemd.show_status=error {self.extra}"\n'
            f"disk = [ 'format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, "
            f"target={self.delta}' ]\n"
            f"vif = [ 'mac={self.plan.mac}, bridge={self.bridge}' ]\n"
            'on_poweroff = "destroy"\non_reboot = "destroy"\non_crash = "destroy"\n'
        )

    def make(self) -> None:
        """The delta on the master and the xl config."""
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
             "-b", str(self.image.master), str(self.delta)],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True,
        )  # fmt: skip
        self.config.write_text(self.xl_config())

    async def create(self) -> bool:
        """`xl create`, once more when libxl gave up on Dom0's side of the guest (it
        destroys the half-made domain itself); False (with `error`) when it failed.
        The boot start stays the first attempt's."""
        self.started = time.time()
        for attempt in (1, 2):
            done = await asyncio.to_thread(xl, "create", str(self.config), timeout=CREATE_TIMEOUT)
            if done.returncode == 0:
                break
            said = (done.stderr or done.stdout).strip()
            if attempt == 1 and any(words in said for words in LATE_IN_DOM0):
                self.retried = said.splitlines()[0][-200:] if said else "late"
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self.error = f"xl create failed: {said[-300:]}"
            return False
        found = (await asyncio.to_thread(domains)).get(self.name)
        self.domid = found[0] if found else None
        return self.domid is not None

    async def destroy(self) -> None:
        """The guest's CPU time, then `xl destroy` and its files removed."""
        found = (await asyncio.to_thread(domains)).get(self.name)
        if found is not None:
            self.cpu_s = found[1]
            await asyncio.to_thread(xl, "destroy", self.name)
        self.delta.unlink(missing_ok=True)
        self.config.unlink(missing_ok=True)


def destroy_all(prefix: str) -> list[str]:
    """`xl destroy` of every domain whose name starts with `prefix` (the last resort
    cleanup); returns their names."""
    names = [name for name in domains() if name.startswith(prefix)]
    for name in names:
        xl("destroy", name)
    return names
