"""How the simulated guests share the CPU with Dom0.

On Xen a guest's processes run on the guest's own vCPUs: Dom0's kernel never schedules
them, and Xen's scheduler gives Dom0 its share (the usual advice for a busy host is Dom0
on cores or a weight of its own). Here the guests are processes on Dom0's kernel, and how
Linux weighs them against the server decides what a boot storm measures. Linux's
autogroup scheduler weighs each session as one:

- `grouped` (the default): all guests of a run stay in the harness's session (each in a
  process group of its own, so it can still be killed whole), and the server with its
  dnsmasq has a session of its own: the guests together weigh as much as Dom0. They still
  run on the same two cores and take whatever Dom0 leaves.
- `peers`: each guest a session of its own, so each weighs as much as all of Dom0: with
  200 guests booting, the server gets about 1/201 of the CPU, like a Xen host whose Dom0
  has no share reserved. It shows how a starved Dom0 behaves.

Measured (200 guests at once, this 2-core machine): a separate cpu cgroup for the guests
did worse than one session, because the harness's own session is then a third share.
Where autogroup is off, or the harness runs in a cpu cgroup other than the root (where
autogroup does not apply), both modes make every process a peer; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("grouped", "peers")
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup_applies() -> bool:
    """Whether Linux weighs sessions as one here (autogroup on, in the root cpu group)."""
    try:
        enabled = AUTOGROUP.read_text().strip() == "1"
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    cpu_group = next(
        (line.split(":", 2)[2] for line in lines if "cpu" in line.split(":")[1].split(",")),
        next((line[3:] for line in lines if line.startswith("0::")), "/"),
    )
    return enabled and cpu_group == "/"


@dataclass(frozen=True)
class GuestCpu:
    """The CPU arrangement of one run's guests (see the module docstring)."""

    mode: str
    how: str  # what the report says

    @classmethod
    def make(cls, mode: str) -> GuestCpu:
        if mode not in MODES:
            raise ValueError(f"guest CPU sharing must be one of {', '.join(MODES)}")
        if not autogroup_applies():
            return cls(mode, "every process a peer of every other (autogroup does not apply)")
        if mode == "peers":
            return cls(mode, "each guest a session of its own, weighed like all of Dom0")
        return cls(mode, "all guests in one session, weighed together like Dom0's")

    def spawn_options(self) -> dict[str, Any]:
        """Keyword arguments for starting a guest: a session of its own for `peers`, else
        a process group of its own in the harness's session (killed whole either way)."""
        if self.mode == "peers":
            return {"start_new_session": True}
        return {"process_group": 0}
