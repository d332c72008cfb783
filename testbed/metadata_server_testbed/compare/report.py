"""The comparison's report as Markdown: verdicts, one table per method (a row per N),
Dom0's costs, faults, what was left behind, what was real and what stood in for Xen,
and how each figure is measured.

Pure: a `Comparison` and the chart file names in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from metadata_server_testbed.compare.results import Comparison, FaultRecord
from metadata_server_testbed.compare.stats import RunSummary, Verdict, summarize_run, verdicts

GOAL_GUESTS = 200
GOAL_SECONDS = 10.0
RAW_FILES = ("raw.json", "runs.csv", "guests.csv")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "> 5000" if math.isinf(value) else f"≤ {value * 1000:g}"


def _mib(value: int) -> str:
    return f"{value / 1048576:.2f}"


def _x(ratio: float) -> str:
    return "∞" if math.isinf(ratio) else f"{ratio:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def time_table(summaries: Sequence[RunSummary]) -> list[str]:
    header = ["N", "configured", "failed", "p50 s", "p95 s", "p99 s", "max s", "guests/s"]
    header += ["within 10 s", "server p50 ms", "server p99 ms"]
    rows = []
    for s in summaries:
        t = s.times
        rows.append(
            [
                str(s.guests),
                str(s.configured),
                str(s.failed),
                _s(t.p50 if t else None),
                _s(t.p95 if t else None),
                _s(t.p99 if t else None),
                _s(t.max if t else None),
                f"{s.per_second:.1f}",
                f"{s.within_10s}/{s.guests}",
                _ms(s.server_p50_s),
                _ms(s.server_p99_s),
            ]
        )
    return _table(header, rows)


def cost_table(summaries: Sequence[RunSummary]) -> list[str]:
    header = [
        "method", "N", "Dom0 CPU s", "per guest s", "guest's own CPU s", "DHCP s", "xl stand-in s",
        "xenstored stand-in s",
        "written MiB", "ISO MiB", "tasks spawned", "requests served", "left behind",
    ]  # fmt: skip
    rows = [
        [
            s.method,
            str(s.guests),
            f"{s.dom0_cpu_s:.2f}",
            f"{s.dom0_cpu_per_guest_s:.3f}",
            f"{s.guests_cpu_per_guest_s:.3f}",
            f"{s.dhcp_cpu_s:.2f}",
            f"{s.standin_cpu_s:.2f}",
            f"{s.xenstored_cpu_s:.2f}",
            _mib(s.write_bytes),
            _mib(s.iso_bytes),
            str(s.tasks),
            str(s.requests),
            str(s.leftovers),
        ]
        for s in summaries
    ]
    return _table(header, rows)


def _cpu_shares(v: Verdict) -> str:
    """Which part of each method's Dom0 CPU went to DHCP or to the xl stand-in."""
    parts = []
    for s in (v.winner, v.loser):
        if s.dhcp_cpu_s > 0:
            rest = s.dom0_cpu_s - s.dhcp_cpu_s
            parts.append(f"{s.method}: {s.dhcp_cpu_s:.2f} s in dnsmasq, {rest:.2f} s the rest")
        if s.standin_cpu_s > 0:
            rest = s.dom0_cpu_s - s.standin_cpu_s
            parts.append(
                f"{s.method}: {s.standin_cpu_s:.2f} s in the xl stand-in, {rest:.2f} s the rest"
            )
    return f" Of that, {'; '.join(parts)}." if parts else ""


def verdict_lines(found: Sequence[Verdict], summaries: Sequence[RunSummary]) -> list[str]:
    lines = []
    for v in found:
        w, lo = v.winner, v.loser
        assert w.times is not None
        assert lo.times is not None
        lines.append(
            f"- **N={v.guests}: {w.method} wins** on time: median {_s(w.times.p50)} s against "
            f"{_s(lo.times.p50)} s ({lo.method} takes {_x(v.p50_ratio)} as long), p95 "
            f"{_s(w.times.p95)} s against {_s(lo.times.p95)} s ({_x(v.p95_ratio)}), "
            f"{w.per_second:.1f} against {lo.per_second:.1f} guests configured per second "
            f"({_x(v.rate_ratio)}). Dom0 CPU: {v.cheaper.method} {v.cheaper.dom0_cpu_s:.2f} s "
            f"against {v.dearer.method} {v.dearer.dom0_cpu_s:.2f} s ({v.dearer.method} costs "
            f"{_x(v.cpu_ratio)} as much)." + _cpu_shares(v)
        )
    if not found:
        lines.append("- No N has results for two methods: nothing to compare.")
    goal = [s for s in summaries if s.method == "network" and s.guests == GOAL_GUESTS]
    for s in goal:
        met = s.within_10s == s.guests and s.leftovers == 0
        worst = _s(s.times.max if s.times else None)
        lines.append(
            f"- Goal ({GOAL_GUESTS} guests by the network method, each configured within "
            f"{GOAL_SECONDS:g} s of its boot start, nothing left behind): "
            f"**{'met' if met else 'not met'}** ({s.within_10s}/{s.guests} within "
            f"{GOAL_SECONDS:g} s, slowest {worst} s, {s.leftovers} things left behind)."
        )
    return lines


def fault_lines(faults: Sequence[FaultRecord]) -> list[str]:
    if not faults:
        return []
    header = [
        "fault", "method", "guests", "configured", "failed (Dom0 noticed)",
        "stuck (nobody noticed)", "Dom0 healthy", "left behind", "survived",
    ]  # fmt: skip
    rows = [
        [
            f.fault,
            f.method,
            str(f.guests),
            str(f.configured),
            str(f.detected),
            str(f.stuck),
            "yes" if f.dom0_healthy else "no",
            str(len(f.leftovers)),
            "yes" if f.survived else "no",
        ]
        for f in faults
    ]
    lines = ["## Faults", "", *_table(header, rows), ""]
    lines.append("What surviving means, and what happened:")
    lines.append("")
    for f in faults:
        states = ", ".join(f"{k} {v}" for k, v in sorted(f.states.items())) or "none"
        lines.append(f"- **{f.fault} / {f.method}**: {f.expected} States at the end: {states}.")
        for message in f.messages[:3]:
            lines.append(f"  - what happened: {message}")
        for item in f.leftovers:
            lines.append(f"  - left behind: {item}")
        for error in f.errors:
            lines.append(f"  - error: {error}")
    return [*lines, ""]


XEN_REAL = [
    "## What was real and what stood in for Xen",
    "",
    "Real, all of it (`--hypervisor xen`, run in a Xen Dom0): the guests are PV domUs, "
    "each booted by `xl create` from a qcow2 delta of one master image with the guest "
    "boot script installed in it, its vif on a bridge of Dom0 with the MAC it is "
    "registered by; the server (`metadata-server serve` in Dom0, in a PID namespace of "
    "its own), its SQLite registry and the dnsmasq it runs; for the ISO method a bridge "
    "the guest cannot reach the server on, the server's ISO flow through the real `xl "
    "block-attach`, the guest kernel's iso9660, the guest's signal through the real "
    "xenstored, `xl block-detach`. Boot start is the moment before `xl create`; the "
    "guest's own CPU is its domain's CPU time from `xl list`. Xen schedules the guests "
    "on their own vCPUs.",
    "",
    "Stood in: nothing.",
    "",
]


def real_and_standin(host: dict[str, object], guest_cpu: Sequence[str] = ()) -> list[str]:
    xen = host.get("hypervisor") == "xen"
    if xen:
        return list(XEN_REAL)
    lines = [
        "## What was real and what stood in for Xen",
        "",
        "Real: the server (`metadata-server serve` as a process in Dom0's network "
        "namespace, with its ISO fallback set up by `[iso]` settings for the ISO method), "
        "its SQLite registry, dnsmasq run by the server on the bridge (leases read from its "
        "lease file), "
        "Linux network namespaces, the bridge and veth pairs, the guest side's "
        "`guest_init/metadata-init` and `dhcp-hook` unchanged, busybox `udhcpc`, `wget`, "
        "`mount`, the ISO images (pycdlib) on read-only loop devices, and the real "
        "xenstore-utils (`xenstore-write` in the guest, the `xenstore-*` tools on Dom0).",
        "",
        "Stood in:",
        "",
        "- Xen guests: busybox roots on one shared read-only image with a per-guest "
        "overlay, each in its own network, mount, UTS and PID namespaces, started by the "
        "harness (boot start = the harness starts the guest's init).",
    ]
    for how in dict.fromkeys(guest_cpu):
        lines.append(
            f"- Xen's scheduler (each guest on its own vCPUs, Dom0 with its share): {how} "
            "(`--guest-cpu`; on the same cores either way)."
        )
    table = host.get("neighbour_table")
    if isinstance(table, list) and len(table) == 2 and table[0] != table[1]:
        lines.append(
            "- Each guest's own kernel: the simulated guests and Dom0 share the host's ARP "
            "table, so its limits (`net.ipv4.neigh.default.gc_thresh1/2/3`) were raised "
            f"from {table[0]} to {table[1]} for the comparison and put back after it."
        )
    lines += [
        "- xenstored: `metadata_server_testbed.xen.xenstored`, a wire-protocol stand-in "
        "with one socket per domain (the guest's `/run/xen/xenstored.sock`); the "
        "harness does what `xl create`/`xl destroy` do to the store.",
        "- `xl block-attach`/`block-detach`: the xl stand-in (a read-only loop device "
        "for the ISO), and for the guest's side of the hot-plug (xen-blkfront + udev) "
        "the harness's hotplug stand-in: Dom0 publishes the loop device's numbers, "
        "the guest's init makes `/dev/xvdd` from them.",
    ]
    if not host.get("iso9660_in_kernel", True):
        lines.append(
            "- The kernel's iso9660 driver (this kernel has none): `mount.iso9660`, "
            "mounting the ISO read-only with fuseiso (FUSE) inside the guest."
        )
    return [*lines, ""]


MEASURED = [
    "## What is measured, and how",
    "",
    "- **Time to configured** (per guest): from its boot start (the harness's clock "
    "when it starts the guest's init process; namespaces and the overlay are made "
    "before) to the `configured` time the server records for it (state_times, ms). "
    "Percentiles interpolate between the nearest ranks, over configured guests only. "
    "**Guests/s**: configured guests divided by the time from the first boot start to "
    "the last `configured`.",
    "- Guests boot at most `concurrency` at a time; a guest holds its slot until its "
    "init ends and, for the ISO method, until Dom0's flow for it is over (detached and "
    "deleted).",
    "- **Dom0 CPU**: user + system time of every process in Dom0's PID namespace (the "
    "server, dnsmasq, xl, xenstore tools, losetup), children "
    "counted once reaped, from /proc/PID/stat; the difference between just before the "
    "first boot and the moment Dom0 is quiet again (every lease recorded, every ISO "
    "flow over). The xl stand-in's share is what its processes report (getrusage); the "
    "xenstored stand-in is its own process and is shown apart, not included. **DHCP**: "
    "the part of Dom0 CPU spent in dnsmasq's processes (the server reads leases from "
    "dnsmasq's lease file: no process per lease).",
    "- **Written**: `write_bytes` of /proc/PID/io of the same processes (what they sent "
    "to storage, reaped children included), over the same window; **ISO MiB**: the "
    "sizes of the ISO images Dom0 wrote (part of `written` when not deleted first).",
    "- **Tasks spawned**: processes and threads created in Dom0's PID namespace "
    "(difference of `ns_last_pid` over the window, less the PIDs its own readings took). "
    "For the network method that is the server's worker threads; for the ISO method xl "
    "(here the stand-in, with its losetup and xenstore-exists), the xenstore tools and "
    "the flows' threads.",
    "- **Requests served**: for the network method the TCP connections Dom0's network "
    "namespace accepted (`Tcp: PassiveOpens`; busybox wget makes one per request); for "
    "the ISO method the `xl` calls plus the provisioning requests. DHCP datagrams are "
    "in the raw data.",
    "- **Left behind**: after each run's cleanup, namespaces with the run's prefix, "
    "loop devices backed by its files, mounts below its directory, its processes, "
    "xenstore signal keys, ISO files and the run directory itself; and once more for "
    "the whole harness after the last cleanup.",
    "",
]


def render(comparison: Comparison, charts: Sequence[str] = ()) -> str:
    summaries = [summarize_run(run) for run in comparison.runs]
    found = verdicts(summaries)
    settings = comparison.settings
    host = comparison.host
    took = comparison.finished - comparison.started
    when = datetime.fromtimestamp(comparison.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        "# Network pull against the ISO method",
        "",
        f"Run {when} on {host.get('cpus', '?')} cores, Linux {host.get('kernel', '?')}; "
        f"methods {', '.join(settings.get('methods', []))}; N = "
        f"{', '.join(str(n) for n in settings.get('sweep', []))}; concurrency "
        f"{settings.get('concurrency')}; hypervisor: {settings.get('hypervisor')}; "
        f"took {took:.1f} s.",
        "",
    ]
    if comparison.interrupted:
        lines += ["**Interrupted**: the figures below cover the runs that finished.", ""]
    lines += ["## Verdict", "", *verdict_lines(found, summaries), ""]
    for method in settings.get("methods", []):
        rows = [s for s in summaries if s.method == method]
        if rows:
            lines += [f"## Time to configured: {method}", "", *time_table(rows), ""]
    if summaries:
        lines += ["## Dom0's cost", "", *cost_table(summaries), ""]
    lines += fault_lines(comparison.faults)
    lines += ["## Left behind", ""]
    if comparison.leftovers:
        lines += [f"- {item}" for item in comparison.leftovers]
    else:
        lines.append(
            "Nothing: the final check after cleanup found no namespace, link, loop "
            "device, mount, process or file of this comparison."
        )
    for run in comparison.runs:
        for item in run.leftovers:
            lines.append(f"- {run.method} N={run.guests}: {item}")
    stale = settings.get("stale_removed") or []
    if stale:
        lines.append(
            f"\nBefore it started, this comparison removed {len(stale)} things an earlier, "
            "killed comparison had left: "
            + "; ".join(stale[:10])
            + ("; ..." if len(stale) > 10 else "")
        )
    lines.append("")
    errors = list(comparison.errors) + [
        f"{run.method} N={run.guests}: {error}" for run in comparison.runs for error in run.errors
    ]
    if errors:
        lines += ["## Errors", "", *[f"- {error}" for error in errors], ""]
    if comparison.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in comparison.notes], ""]
    lines += real_and_standin(host, [run.guest_cpu for run in comparison.runs if run.guest_cpu])
    lines += MEASURED
    if charts:
        lines += ["## Charts", ""]
        lines += [f"![{name}]({name})" for name in charts]
        lines.append("")
    lines += ["## Raw data", "", ", ".join(f"`{name}`" for name in RAW_FILES), ""]
    return "\n".join(lines)
