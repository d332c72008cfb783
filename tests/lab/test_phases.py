"""The lab's split of a guest's boot into phases, read from a console log as
xenconsoled writes it (its own wall-clock stamp, then the guest kernel's)."""

from __future__ import annotations

import pytest

from lab.scenarios.common import boot_phases

CONSOLE = """\
[2026-12-02 06:40:01] [    0.000000] Linux version 6.1.0-28-amd64
[2026-12-02 06:40:40] [   38.912000] Freeing unused kernel image (initmem) memory: 2920K
[2026-12-02 06:40:41] [   39.500000] Run /init as init process
[2026-12-02 06:41:02] [   60.250000] systemd[1]: systemd 252.33-1~deb12u1 running in system mode
[2026-12-02 06:42:30] metadata-init: applied instance i-0123
"""


def test_a_whole_boot_is_split_at_init_and_at_systemd() -> None:
    phases = boot_phases(CONSOLE, 161.0)
    assert phases == pytest.approx({"kernel": 39.5, "initramfs": 20.75, "userspace": 100.75})
    assert sum(phases.values()) == pytest.approx(161.0)


def test_a_console_without_the_markers_gives_what_it_has() -> None:
    assert boot_phases("", 100.0) == {}
    kernel_only = "\n".join(CONSOLE.splitlines()[:3])
    assert boot_phases(kernel_only, 100.0) == pytest.approx({"kernel": 39.5})
