"""Percentiles, run summaries and verdicts: pure figures from records."""

from __future__ import annotations

import math

import pytest
from metadata_server_testbed.compare.results import Dom0Cost, GuestRecord, RunRecord
from metadata_server_testbed.compare.stats import percentile, summarize, summarize_run, verdicts


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 95, 95.05),
        ([float(i) for i in range(1, 101)], 99, 99.01),
    ],
    ids=[
        "one",
        "one-p99",
        "two",
        "even",
        "unsorted-min",
        "unsorted-max",
        "p95-of-100",
        "p99-of-100",
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)], ids=["empty", "below", "above"]
)
def test_percentile_refuses(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match=r"no values|q must be"):
        percentile(values, q)


def test_summarize() -> None:
    assert summarize([]) is None
    s = summarize([3.0, 1.0, 2.0])
    assert s is not None
    assert (s.count, s.p50, s.max, s.mean) == (3, 2.0, 3.0, 2.0)


def run(method: str, n: int, times: list[float | None], cpu: float) -> RunRecord:
    guests = [
        GuestRecord(
            method=method,
            guests=n,
            index=i + 1,
            mac=f"02:00:00:00:00:{i + 1:02x}",
            boot_start=100.0,
            configured_at=None if t is None else 100.0 + t,
            seconds=t,
            state="configured" if t is not None else "fetched",
            via=method if t is not None else "",
            exit_code=0,
        )
        for i, t in enumerate(times)
    ]
    done = [t for t in times if t is not None]
    return RunRecord(
        method=method, guests=n, concurrency=4, started=100.0,
        boot_wall_s=max(done) if done else 0.0, quiet_wall_s=max(done, default=0.0) + 1,
        configured=len(done), failed=n - len(done), dom0=Dom0Cost(cpu_s=cpu, http_requests=3 * n),
        guest_records=guests,
    )  # fmt: skip


def test_summarize_run_counts_failures_apart_from_times() -> None:
    s = summarize_run(run("network", 4, [1.0, 2.0, None, 12.0], cpu=2.0))
    assert (s.configured, s.failed, s.within_10s) == (3, 1, 2)
    assert s.times is not None and s.times.max == 12.0 and s.times.count == 3
    assert s.per_second == pytest.approx(3 / 12.0)
    assert s.dom0_cpu_per_guest_s == pytest.approx(0.5)
    assert s.requests == 12


def test_verdicts_name_the_faster_and_the_cheaper_method() -> None:
    summaries = [
        summarize_run(run("network", 2, [1.0, 1.0], cpu=8.0)),
        summarize_run(run("iso", 2, [3.0, 3.0], cpu=2.0)),
        summarize_run(run("network", 5, [1.0] * 5, cpu=1.0)),  # no ISO run for N=5
    ]
    [v] = verdicts(summaries)
    assert (v.guests, v.winner.method, v.loser.method) == (2, "network", "iso")
    assert v.p50_ratio == pytest.approx(3.0) and v.rate_ratio == pytest.approx(3.0)
    assert (v.cheaper.method, v.cpu_ratio) == ("iso", pytest.approx(4.0))


def test_verdict_ratio_with_zero_cost() -> None:
    summaries = [
        summarize_run(run("network", 1, [1.0], cpu=0.0)),
        summarize_run(run("iso", 1, [2.0], cpu=0.5)),
    ]
    [v] = verdicts(summaries)
    assert v.cheaper.method == "network" and math.isinf(v.cpu_ratio)
