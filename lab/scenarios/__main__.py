"""Run in dom0 by lab-scenario.service: the scenarios named by `lab.scenario=A+B+...` on
the kernel command line, in that order, in one boot (they share the toolstack, the
bridge and the metadata server), each ending with its END marker; then power-off
(unless `lab.keep` is on the command line)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

from lab import markers
from lab.scenarios import SCENARIOS
from lab.scenarios.common import Dom0, say, step


def kernel_option(name: str) -> str | None:
    for word in Path("/proc/cmdline").read_text().split():
        key, _, value = word.partition("=")
        if key == name:
            return value
    return None


def run_one(name: str, dom0: Dom0) -> bool:
    step(f"scenario {name} starts")
    scenario = SCENARIOS.get(name)
    if scenario is None:
        known = ", ".join(sorted(SCENARIOS))
        say(
            markers.check_line(
                f"{name}.scenario", markers.FAIL, f"no such scenario; known: {known}"
            )
        )
        return False
    try:
        return scenario(dom0)
    except Exception as error:  # the scenario's own failure: reported, the next one runs
        say(
            markers.check_line(f"{name}.scenario", markers.FAIL, f"{type(error).__name__}: {error}")
        )
        for line in traceback.format_exc().splitlines():
            say(f"lab| {line}")
        dom0.diagnostics()
        return False
    finally:
        dom0.destroy_running()


def main() -> int:
    names = [n for n in (kernel_option("lab.scenario") or "").split("+") if n]
    dom0 = Dom0()
    try:
        for name in names:
            say(markers.end_line(name, run_one(name, dom0)))
    finally:
        dom0.close()
        sys.stdout.flush()
        if kernel_option("lab.keep") is None:
            os.sync()
            subprocess.run(["systemctl", "poweroff", "--force", "--force"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
