"""What Dom0's processes cost, read from /proc: CPU time, bytes written, tasks created,
and a network namespace's TCP/UDP counters.

- CPU: for every process in a set, utime + stime + cutime + cstime of /proc/PID/stat
  (children count once reaped; a process tree's total only grows while its root lives).
- Writes: /proc/PID/io `write_bytes` (bytes the process caused to be sent to storage,
  reaped children included), `cancelled_write_bytes` (of those, dropped again before
  writeback, e.g. a file deleted in time) and `wchar` (bytes passed to write calls).
- Tasks created: `ns_last_pid` of a PID namespace (PIDs are handed out in order, so the
  difference of two readings is the number of processes and threads created between
  them), read by one `nsenter ... cat`, which itself takes one PID.
- Network counters: /proc/net/snmp of a network namespace (`Tcp: PassiveOpens` counts
  accepted TCP connections; `Udp: InDatagrams` received datagrams).

Reads only; never signals or changes a process.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUT = 10


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float = 0.0
    write_bytes: int = 0
    cancelled_write_bytes: int = 0
    wchar: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_seconds + other.cpu_seconds,
            self.write_bytes + other.write_bytes,
            self.cancelled_write_bytes + other.cancelled_write_bytes,
            self.wchar + other.wchar,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_seconds - other.cpu_seconds,
            self.write_bytes - other.write_bytes,
            self.cancelled_write_bytes - other.cancelled_write_bytes,
            self.wchar - other.wchar,
        )


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        text = stat.read()
    # The command name may hold spaces and parentheses: the fields follow the last ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid`, in seconds."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14 to 17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def command(pid: int) -> str:
    """The process's command name (/proc/PID/comm), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot): with the PID, names one process for
    good, as PIDs are reused. None if there is no such process."""
    try:
        return int(_stat_fields(pid)[19])  # field 22
    except (OSError, ValueError, IndexError):
        return None


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def io_counters(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        return {key.strip(): int(value) for key, _, value in (line.partition(":") for line in io)}


def usage_of(pid: int) -> Usage:
    """The usage of one process (with its reaped children); zero if it is gone."""
    try:
        io = io_counters(pid)
        return Usage(
            cpu_seconds(pid),
            io.get("write_bytes", 0),
            io.get("cancelled_write_bytes", 0),
            io.get("wchar", 0),
        )
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return Usage()


def usage_of_all(pids: Iterable[int]) -> Usage:
    total = Usage()
    for pid in pids:
        total += usage_of(pid)
    return total


def pid_namespace(pid: int) -> str:
    """The PID namespace of `pid`, as /proc shows it (`pid:[4026532…]`)."""
    return os.readlink(f"/proc/{pid}/ns/pid")


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def processes_in(namespace: str) -> list[int]:
    """Every process whose PID namespace is `namespace`."""
    found = []
    for pid in all_pids():
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == namespace:
                found.append(pid)
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/PID/task/*/children)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                children += [int(word) for word in listing.read().split()]
        except FileNotFoundError:
            continue
    return children


def last_pid(member: int) -> int:
    """`ns_last_pid` of the PID namespace that process `member` is in (costs one PID)."""
    result = subprocess.run(
        ["nsenter", "--target", str(member), "--pid", "--", "cat", "/proc/sys/kernel/ns_last_pid"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return int(result.stdout.strip())


def parse_snmp(text: str) -> dict[str, int]:
    """/proc/net/snmp → {"Tcp.PassiveOpens": n, ...} (pairs of header and value lines)."""
    counters: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if not header or not values or header[0] != values[0]:
            continue
        group = header[0].rstrip(":")
        for name, value in zip(header[1:], values[1:], strict=False):
            try:
                counters[f"{group}.{name}"] = int(value)
            except ValueError:
                continue
    return counters


def netns_counters(netns: str | None) -> dict[str, int]:
    """The SNMP counters of network namespace `netns` (None: this process's own)."""
    if netns is None:
        return parse_snmp(Path("/proc/net/snmp").read_text())
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return parse_snmp(result.stdout)
