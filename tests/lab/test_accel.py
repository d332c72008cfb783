"""How the lab picks QEMU's accelerator: KVM only with real VMX/SVM and kvm_intel or
kvm_amd loaded; a KVM-PVM host (this one) and anything else get TCG with qemu64."""

from __future__ import annotations

import pytest

from lab.qemu import detect_accel

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm sse2\n"
PLAIN = "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n"


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
