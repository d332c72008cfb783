"""Room in the host's IPv4 neighbour (ARP) table for a comparison's guests.

Linux keeps one ARP table for every network namespace, with limits that only the
initial namespace sets (`net.ipv4.neigh.default.gc_thresh1..3`, 128/512/1024 by
default). The simulated guests share the host's kernel: their own entries (each for
Dom0's address) and the entries Dom0 keeps for each guest address it answered
(REACHABLE for about 30 s, then STALE until collected) land in that one table. A fleet
of 1,000 guests booted 50 at a time filled it in about 25 s here: the kernel refused new
entries (dnsmasq: "ARP-cache injection failed: No buffer space available"), DHCP offers
were not sent, and every guest booting then waited for udhcpc's retries (p99 16 s instead
of 4 s). On Xen every guest has its own kernel and Dom0's table holds only Dom0's entries.

`raised_for(guests)` lifts the limits for the comparison to what its largest run can
use and puts the old ones back afterwards; the harness records both in its report.
A comparison killed outright leaves the raised limits (only ever higher than before).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")
NAMES = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
ENTRIES_PER_GUEST = 4  # Dom0's entry for the guest, the guest's own for Dom0, and margin


@dataclass(frozen=True)
class Limits:
    gc_thresh1: int
    gc_thresh2: int
    gc_thresh3: int

    def describe(self) -> str:
        return f"{self.gc_thresh1}/{self.gc_thresh2}/{self.gc_thresh3}"


KERNEL_DEFAULTS = Limits(128, 512, 1024)  # what a host needs without the guests


def needed(current: Limits, guests: int) -> Limits:
    """Limits with room for `guests` beyond the kernel's defaults; never lower than the
    current ones (a host that has more keeps it)."""
    extra = ENTRIES_PER_GUEST * guests
    return Limits(
        gc_thresh1=current.gc_thresh1,
        gc_thresh2=max(current.gc_thresh2, KERNEL_DEFAULTS.gc_thresh2 + extra // 2),
        gc_thresh3=max(current.gc_thresh3, KERNEL_DEFAULTS.gc_thresh3 + extra),
    )


def read(root: Path = SYSCTL) -> Limits:
    values = [int((root / name).read_text().strip()) for name in NAMES]
    return Limits(*values)


def write(limits: Limits, root: Path = SYSCTL) -> None:
    # gc_thresh3 first when raising, last when lowering: thresh2 never exceeds it
    order = NAMES[::-1] if limits.gc_thresh3 >= read(root).gc_thresh3 else NAMES
    for name in order:
        (root / name).write_text(f"{getattr(limits, name)}\n")


@contextmanager
def raised_for(guests: int, root: Path = SYSCTL) -> Iterator[tuple[Limits, Limits]]:
    """Raise the limits for `guests` while the block runs; yields (before, during)."""
    before = read(root)
    during = needed(before, guests)
    if during != before:
        write(during, root)
    try:
        yield before, during
    finally:
        if during != before:
            write(before, root)
