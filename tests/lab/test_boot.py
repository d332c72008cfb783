"""The runner's own promises on real QEMU and Xen: a VM that does not finish by its
deadline is killed, and the failure carries the tail of the serial console; QEMU is
given no network and every disk as a snapshot."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.builder.build import BuildReport
from lab.qemu import LabFailed, boot, host_accel, qemu_argv
from tests.lab.conftest import LAB_TIMEOUT

pytestmark = [pytest.mark.xen_lab, pytest.mark.timeout(LAB_TIMEOUT)]


def qemu_running_with(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_a_vm_past_its_deadline_is_killed_with_the_serial_tail(
    lab_build: BuildReport, tmp_path: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(LabFailed) as failure:
        boot(lab_build.lab, ["network"], log_dir=tmp_path, deadline=6.0, say=lambda _line: None)
    elapsed = time.monotonic() - start
    message = str(failure.value)
    assert "hung past its deadline of 6 s" in message
    assert "last 60 lines of the serial console" in message
    assert "(XEN)" in message  # Xen had started writing to the serial port
    assert elapsed < 20
    (serial,) = tmp_path.glob("serial-*.log")
    assert qemu_running_with(serial) == []


def test_qemu_gets_no_network_and_only_snapshots(lab_build: BuildReport, tmp_path: Path) -> None:
    argv = qemu_argv(lab_build.lab, ["network", "iso"], tmp_path / "serial.log", host_accel())
    assert argv[argv.index("-nic") + 1] == "none"
    assert "-snapshot" in argv
    assert "lab.scenario=network+iso" in argv[argv.index("-initrd") + 1]
    assert argv[argv.index("-accel") + 1] == host_accel().name
