"""What a comparison records: per guest, per run, per fault, and for the whole sweep, with
their JSON and CSV forms (the raw data written next to the report).

Pure: plain dataclasses and conversions; the writing of files is the caller's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class GuestRecord:
    method: str
    guests: int  # N of the run
    index: int
    mac: str
    boot_start: float  # wall clock, s: when the harness started the guest
    configured_at: float | None  # the server's `configured` time, s
    seconds: float | None  # configured_at - boot_start
    state: str  # the guest's state on the server at the end
    via: str  # "network" or "iso": how it got its configuration ("" if it did not)
    exit_code: int | None  # of the guest's init; None: killed
    problem: str = ""  # why it was not configured


@dataclass
class Dom0Cost:
    """Dom0's cost over one run's boot window (see procstats for each figure)."""

    cpu_s: float = 0.0  # Dom0's process tree, until Dom0 was quiet again
    cpu_boot_s: float = 0.0  # the same, until every guest's boot (and ISO flow) ended
    dhcp_cpu_s: float = 0.0  # of cpu_s: dnsmasq's
    standin_cpu_s: float = 0.0  # of cpu_s: the xl stand-in processes
    xenstored_cpu_s: float = 0.0  # the xenstored stand-in (a process of its own)
    write_bytes: int = 0
    cancelled_write_bytes: int = 0
    wchar: int = 0
    iso_bytes: int = 0  # ISO images written (their sizes, summed)
    tasks: int = 0  # processes and threads created in Dom0's PID namespace
    http_requests: int = 0  # TCP connections accepted in Dom0's network namespace
    dhcp_datagrams: int = 0  # UDP datagrams received in Dom0's network namespace
    xl_calls: int = 0
    provision_calls: int = 0
    leases_recorded: int = 0  # guests whose lease the server recorded (from dnsmasq's lease file)


@dataclass
class RunRecord:
    method: str
    guests: int
    concurrency: int
    started: float
    boot_wall_s: float  # first boot start → last guest configured
    quiet_wall_s: float  # first boot start → Dom0 quiet (leases recorded and flows done)
    configured: int
    failed: int
    dom0: Dom0Cost
    # CPU the simulated guests themselves used (their boot scripts, udhcpc, wget...):
    # on this one machine they share the cores with Dom0
    guests_cpu_s: float = 0.0
    guest_cpu: str = ""  # how the guests shared the CPU with Dom0 (cpu_share.GuestCpu.how)
    # the server's own answer times to guests, from its latency histogram (GET /metrics):
    # the upper bound of the bucket holding the quantile, as Prometheus estimates it
    server_p50_s: float | None = None
    server_p99_s: float | None = None
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    guest_records: list[GuestRecord] = field(default_factory=list)


@dataclass
class FaultRecord:
    fault: str
    method: str
    guests: int
    configured: int  # guests the server recorded configured
    detected: int  # guests the server recorded failed, with a reason
    stuck: int  # guests left in registered, leased or fetched: nobody noticed
    dom0_healthy: bool  # the server answered /healthz after the fault
    expected: str  # what surviving this fault means
    survived: bool
    states: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    started: float
    finished: float
    settings: dict[str, Any]
    host: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # the final check, after cleanup
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the report lacks, not a failure


def to_json(comparison: Comparison) -> dict[str, Any]:
    return asdict(comparison)


def from_json(data: dict[str, Any]) -> Comparison:
    runs = [
        RunRecord(
            **{
                **run,
                "dom0": Dom0Cost(**run["dom0"]),
                "guest_records": [GuestRecord(**g) for g in run["guest_records"]],
            }
        )
        for run in data["runs"]
    ]
    faults = [FaultRecord(**fault) for fault in data["faults"]]
    return Comparison(**{**data, "runs": runs, "faults": faults})


def guests_csv(comparison: Comparison) -> str:
    """One row per guest of every run."""
    out = io.StringIO()
    names = [f.name for f in fields(GuestRecord)]
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for run in comparison.runs:
        for guest in run.guest_records:
            writer.writerow(asdict(guest))
    return out.getvalue()


def runs_csv(comparison: Comparison) -> str:
    """One row per run, Dom0's costs flattened into dom0_* columns."""
    out = io.StringIO()
    run_names = [
        f.name for f in fields(RunRecord) if f.name not in ("dom0", "guest_records", "errors")
    ]
    cost_names = [f"dom0_{f.name}" for f in fields(Dom0Cost)]
    writer = csv.DictWriter(out, fieldnames=run_names + cost_names, lineterminator="\n")
    writer.writeheader()
    for run in comparison.runs:
        row: dict[str, Any] = {name: getattr(run, name) for name in run_names}
        row["leftovers"] = len(run.leftovers)
        row.update({f"dom0_{k}": v for k, v in asdict(run.dom0).items()})
        writer.writerow(row)
    return out.getvalue()
