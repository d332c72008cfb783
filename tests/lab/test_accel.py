"""How the lab picks QEMU's accelerator: KVM only with real VMX/SVM and kvm_intel or
kvm_amd loaded; a KVM-PVM host (this one) and anything else get TCG with qemu64. And
how many vCPUs each of the VMs booted side by side gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.builder.build import Lab
from lab.qemu import Accel, detect_accel, machine_for, qemu_argv

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm sse2\n"
PLAIN = "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n"
TCG = Accel("tcg", "qemu64", "no vmx or svm in the CPU flags")
FILES = ("xen", "vmlinuz", "initrd", "dom0.img", "project.img")
FAKE_LAB = Lab("base", "project", *(Path("/lab", name) for name in FILES))  # argv only


@pytest.mark.parametrize(
    ("cpuinfo", "modules", "device", "accel", "cpu", "why"),
    [
        pytest.param(INTEL, ["kvm_intel"], True, "kvm", "host", "vmx", id="intel-vmx"),
        pytest.param(AMD, ["kvm_amd"], True, "kvm", "host", "svm", id="amd-svm"),
        pytest.param(PLAIN, ["kvm_pvm"], True, "tcg", "qemu64", "no vmx or svm", id="kvm-pvm-host"),
        pytest.param(INTEL, ["kvm_pvm"], True, "tcg", "qemu64", "kvm_pvm", id="vmx-but-pvm-module"),
        pytest.param(INTEL, ["kvm_intel"], False, "tcg", "qemu64", "no /dev/kvm", id="no-device"),
        pytest.param(AMD, [], True, "tcg", "qemu64", "none", id="no-module"),
    ],
)
def test_accel(
    cpuinfo: str, modules: list[str], device: bool, accel: str, cpu: str, why: str
) -> None:
    found = detect_accel(cpuinfo, modules, device)
    assert (found.name, found.cpu) == (accel, cpu)
    assert why in found.reason


@pytest.mark.parametrize(
    ("groups", "host_cpus", "vcpus"),
    [(1, 2, 2), (2, 2, 1), (2, 4, 2), (3, 2, 1), (2, 1, 1)],
)
def test_vms_side_by_side_never_have_more_vcpus_than_the_host_has_cores_to_share(
    groups: int, host_cpus: int, vcpus: int
) -> None:
    machine = machine_for(groups, host_cpus)
    assert machine.cpus == vcpus
    argv = qemu_argv(FAKE_LAB, ["network"], Path("/tmp/serial.log"), TCG, machine)
    assert argv[argv.index("-smp") + 1] == str(vcpus)
    assert f"dom0_max_vcpus={vcpus}" in argv[argv.index("-append") + 1]
