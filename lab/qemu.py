"""Boot the lab: Xen and the PV dom0 inside QEMU, a scenario named on dom0's kernel
command line, the serial console into a log file, and the machine killed at a deadline.

QEMU gets no network (`-nic none`) and every disk with `-snapshot`, so the cached
images are never written. Acceleration is TCG with `-cpu qemu64` (Xen's PV dom0 crashes
under TCG with `-cpu max`, which turns on SMAP); KVM only where the host has real VMX or
SVM, which `detect_accel` checks instead of assuming (a KVM-PVM host has /dev/kvm but
cannot run Xen).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from lab import markers
from lab.builder.build import Lab

# A boot is over when the scenario ends, or when Xen or a kernel dies.
_DEATH_RE = re.compile(
    r"Panic on CPU \d+|Kernel panic - not syncing|Dom0 crashed|Reboot in five seconds"
)
TAIL_LINES = 60
POWEROFF_GRACE = 60.0  # seconds for dom0 to power off after its END marker
DEATH_GRACE = 3.0  # seconds of serial output kept after a panic, then QEMU is stopped


class LabFailed(AssertionError):
    """The lab did not finish: it hung past its deadline, Xen or dom0 died, or QEMU
    failed. The message ends with the tail of the serial log."""


def serial_tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(line.rstrip("\r") for line in text.splitlines()[-lines:])


@dataclass(frozen=True)
class Accel:
    name: str  # "tcg" or "kvm"
    cpu: str
    reason: str


def detect_accel(cpuinfo: str, kvm_modules: Sequence[str], kvm_device: bool) -> Accel:
    """KVM when the CPU has VMX or SVM, /dev/kvm exists and the loaded KVM module is
    kvm_intel or kvm_amd (not kvm_pvm, which runs Xen's ring 0 through an emulator);
    else TCG."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    hardware = {"vmx": "kvm_intel", "svm": "kvm_amd"}
    for flag, module in hardware.items():
        if flag in flags and kvm_device and module in kvm_modules:
            return Accel("kvm", "host", f"{flag} in the CPU flags and {module} loaded")
    why = (
        "no /dev/kvm"
        if not kvm_device
        else "no vmx or svm in the CPU flags"
        if not flags & set(hardware)
        else f"KVM module is {', '.join(kvm_modules) or 'none'}, not kvm_intel or kvm_amd"
    )
    return Accel("tcg", "qemu64", why)


def host_accel() -> Accel:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    modules = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if Path("/sys/module", m).exists()]
    return detect_accel(cpuinfo, modules, Path("/dev/kvm").exists())


@dataclass(frozen=True)
class Machine:
    memory_mib: int = 4096
    cpus: int = 2
    dom0_memory: str = "1536M"


def qemu_argv(
    lab: Lab,
    scenarios: Sequence[str],
    serial_log: Path,
    accel: Accel,
    machine: Machine = Machine(),
    dom0_args: Sequence[str] = (),
) -> list[str]:
    """The QEMU command line. Multiboot: -kernel is Xen (an ELF), -initrd lists the
    modules, ',' between them, each followed by its own command line."""
    xen_args = [
        "console=com1",
        "com1=115200,8n1",
        "console_timestamps=boot",
        f"dom0_mem={machine.dom0_memory},max:{machine.dom0_memory}",
        f"dom0_max_vcpus={machine.cpus}",
        "loglvl=info",
        "guest_loglvl=info",
    ]
    kernel_args = [
        "root=/dev/vda",
        "rw",
        "console=hvc0",
        "earlyprintk=xen",
        "loglevel=4",
        # "+" between names: QEMU's -initrd takes "," between modules
        f"lab.scenario={'+'.join(scenarios)}",
        *dom0_args,
    ]
    return [
        "qemu-system-x86_64",
        "-accel",
        accel.name,
        "-cpu",
        accel.cpu,
        "-m",
        str(machine.memory_mib),
        "-smp",
        str(machine.cpus),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-chardev",
        f"file,id=serial0,path={serial_log}",
        "-serial",
        "chardev:serial0",
        "-kernel",
        str(lab.xen),
        "-append",
        " ".join(xen_args),
        "-initrd",
        f"{lab.vmlinuz} {' '.join(kernel_args)},{lab.initrd}",
        "-drive",
        f"file={lab.dom0_image},format=raw,if=virtio,cache=unsafe",
        "-drive",
        f"file={lab.project_image},format=raw,if=virtio,cache=unsafe",
        "-snapshot",
    ]


@dataclass(frozen=True)
class Boot:
    scenarios: tuple[str, ...]
    serial_log: Path
    seconds: float  # QEMU start to exit
    first_marker_seconds: float | None  # QEMU start to the scenario's first line
    report: markers.Report
    accel: Accel


def boot(
    lab: Lab,
    scenarios: Sequence[str],
    *,
    log_dir: Path,
    deadline: float,
    machine: Machine = Machine(),
    dom0_args: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> Boot:
    """Boot the lab for `scenarios` (run by dom0 in that order, in this one boot) and
    wait for their END markers and dom0's power-off.
    Raises LabFailed (with the serial tail) when it hangs past `deadline` seconds, when
    Xen or a kernel panics, or when QEMU fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    serial = log_dir / f"serial-{'-'.join(scenarios)}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    serial.write_bytes(b"")
    accel = host_accel()
    argv = qemu_argv(lab, scenarios, serial, accel, machine, dom0_args)
    say(
        f"lab: booting for {', '.join(scenarios)} ({accel.name}: {accel.reason}); "
        f"serial log {serial}"
    )
    stderr_path = serial.with_suffix(".qemu-stderr")
    start = time.monotonic()
    first_marker: float | None = None
    ended_at: float | None = None
    died_at: float | None = None
    with stderr_path.open("wb") as stderr:
        # in our process group: whatever stops the caller's group stops QEMU too
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            text = serial.read_text(errors="replace")
            if first_marker is None and "LAB-STEP" in text:
                first_marker = now - start
            if (
                ended_at is None
                and "LAB-END" in text
                and set(scenarios) <= set(markers.parse(text).ended)
            ):
                ended_at = now
            if died_at is None and _DEATH_RE.search(text):
                died_at = now
            if died_at is not None and now - died_at > DEATH_GRACE:
                raise LabFailed(_failure("Xen or a kernel died", serial, stderr_path))
            if ended_at is not None and now - ended_at > POWEROFF_GRACE:
                raise LabFailed(
                    _failure("dom0 did not power off after the scenario", serial, stderr_path)
                )
            if now - start > deadline:
                raise LabFailed(
                    _failure(
                        f"the lab hung past its deadline of {deadline:g} s", serial, stderr_path
                    )
                )
    finally:
        _stop(proc)
    seconds = time.monotonic() - start
    text = serial.read_text(errors="replace")
    if proc.returncode != 0:
        raise LabFailed(_failure(f"QEMU exited with status {proc.returncode}", serial, stderr_path))
    report = markers.parse(text)
    missing = [name for name in scenarios if name not in report.ended]
    if missing:
        raise LabFailed(
            _failure(f"dom0 powered off before {', '.join(missing)} ended", serial, stderr_path)
        )
    return Boot(tuple(scenarios), serial, seconds, first_marker, report, accel)


def machine_for(groups: int, host_cpus: int) -> Machine:
    """A VM for each of `groups` VMs side by side: together no more vCPUs than the host
    has cores. Each TCG vCPU is a host thread that runs flat out; with more of them than
    cores, one is preempted while it holds a lock (Xen's, or dom0's) that another spins
    on. Measured on this 2-core host: two 2-vCPU VMs took 19.5 minutes for the lab, one
    2-vCPU VM 12.5, two 1-vCPU VMs 8.5."""
    return replace(Machine(), cpus=max(1, host_cpus // max(1, groups)))


def boot_groups(
    lab: Lab,
    groups: Sequence[Sequence[str]],
    *,
    log_dir: Path,
    deadline: float,
    say: Callable[[str], None] = print,
) -> dict[str, Boot | LabFailed]:
    """Boot one VM per group of scenarios, all at once, each with `deadline` and its
    share of the host's cores (`machine_for`); returns each scenario's boot, or the
    LabFailed of its group's VM (the other groups go on)."""
    machine = machine_for(len(groups), os.cpu_count() or 1)

    def one(group: Sequence[str]) -> Boot | LabFailed:
        try:
            return boot(lab, group, log_dir=log_dir, deadline=deadline, machine=machine, say=say)
        except LabFailed as failure:
            return failure

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        outcomes = list(pool.map(one, groups))
    by_scenario: dict[str, Boot | LabFailed] = {}
    for group, outcome in zip(groups, outcomes, strict=True):
        by_scenario.update(dict.fromkeys(group, outcome))
    return by_scenario


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait()


def _failure(why: str, serial: Path, stderr: Path) -> str:
    text = serial.read_text(errors="replace") if serial.exists() else ""
    qemu = stderr.read_text(errors="replace").strip() if stderr.exists() else ""
    return (
        f"{why}; serial log {serial}"
        + (f"\nQEMU said: {qemu[-2000:]}" if qemu else "")
        + f"\n--- the last {TAIL_LINES} lines of the serial console ---\n{serial_tail(text)}"
    )
