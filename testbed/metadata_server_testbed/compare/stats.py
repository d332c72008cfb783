"""The figures of a comparison: percentiles of time-to-configured per method and N,
throughput, Dom0's cost per guest, and which method wins each N by what ratio.

Percentiles interpolate linearly between the two nearest ranks (numpy's default), over
the guests that were configured; guests that were not count as failures, not as times.
Pure: records in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from metadata_server_testbed.compare.results import RunRecord


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values` (not empty), linearly interpolated."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be 0 to 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(
        count=len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        max=max(values),
        mean=sum(values) / len(values),
    )


@dataclass(frozen=True)
class RunSummary:
    method: str
    guests: int
    concurrency: int
    configured: int
    failed: int
    times: Summary | None  # time-to-configured, s
    per_second: float  # guests configured per second of the boot window
    within_10s: int  # guests configured within 10 s of their boot start
    dom0_cpu_s: float
    dom0_cpu_per_guest_s: float
    guests_cpu_per_guest_s: float
    dhcp_cpu_s: float
    standin_cpu_s: float
    xenstored_cpu_s: float
    write_bytes: int
    iso_bytes: int
    tasks: int
    requests: int  # HTTP requests (network) or xl calls + provision calls (ISO)
    leftovers: int
    server_p50_s: float | None = None  # the server's answers to guests (its histogram)
    server_p99_s: float | None = None


def summarize_run(run: RunRecord) -> RunSummary:
    times = [g.seconds for g in run.guest_records if g.seconds is not None]
    window = run.boot_wall_s
    cost = run.dom0
    requests = cost.http_requests + cost.xl_calls + cost.provision_calls
    return RunSummary(
        method=run.method,
        guests=run.guests,
        concurrency=run.concurrency,
        configured=run.configured,
        failed=run.failed,
        times=summarize(times),
        per_second=run.configured / window if window > 0 else 0.0,
        within_10s=sum(1 for t in times if t <= 10.0),
        dom0_cpu_s=cost.cpu_s,
        dom0_cpu_per_guest_s=cost.cpu_s / run.guests if run.guests else 0.0,
        guests_cpu_per_guest_s=run.guests_cpu_s / run.guests if run.guests else 0.0,
        dhcp_cpu_s=cost.dhcp_cpu_s,
        standin_cpu_s=cost.standin_cpu_s,
        xenstored_cpu_s=cost.xenstored_cpu_s,
        write_bytes=cost.write_bytes,
        iso_bytes=cost.iso_bytes,
        tasks=cost.tasks,
        requests=requests,
        leftovers=len(run.leftovers),
        server_p50_s=run.server_p50_s,
        server_p99_s=run.server_p99_s,
    )


@dataclass(frozen=True)
class Verdict:
    """For one N: the faster method by median time-to-configured, and the ratios."""

    guests: int
    winner: RunSummary
    loser: RunSummary
    p50_ratio: float  # loser's p50 / winner's p50
    p95_ratio: float
    rate_ratio: float  # winner's guests/s / loser's
    cheaper: RunSummary  # the method with less Dom0 CPU
    dearer: RunSummary
    cpu_ratio: float  # the dearer one's Dom0 CPU / the cheaper one's


def _ratio(high: float, low: float) -> float:
    if low <= 0:
        return math.inf if high > 0 else 1.0
    return high / low


def verdicts(summaries: Sequence[RunSummary]) -> list[Verdict]:
    """One verdict per N that has a complete summary for two methods."""
    by_n: dict[int, list[RunSummary]] = {}
    for summary in summaries:
        by_n.setdefault(summary.guests, []).append(summary)
    found = []
    for n in sorted(by_n):
        pair = [s for s in by_n[n] if s.times is not None]
        if len(pair) != 2:
            continue
        a, b = pair
        assert a.times is not None
        assert b.times is not None
        winner, loser = (a, b) if a.times.p50 <= b.times.p50 else (b, a)
        assert winner.times is not None
        assert loser.times is not None
        cheap, dear = (a, b) if a.dom0_cpu_s <= b.dom0_cpu_s else (b, a)
        found.append(
            Verdict(
                guests=n,
                winner=winner,
                loser=loser,
                p50_ratio=_ratio(loser.times.p50, winner.times.p50),
                p95_ratio=_ratio(loser.times.p95, winner.times.p95),
                rate_ratio=_ratio(winner.per_second, loser.per_second),
                cheaper=cheap,
                dearer=dear,
                cpu_ratio=_ratio(dear.dom0_cpu_s, cheap.dom0_cpu_s),
            )
        )
    return found
