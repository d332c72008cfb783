"""The comparison harness end to end, small: 3 guests by each method plus every fault
with one guest, through `metadata-server compare`'s own entry point. The report, the
charts and the raw data must be there and agree with each other; every guest must be
configured; nothing may be left behind (namespaces, loop devices, mounts, processes,
files)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from metadata_server_testbed import cli as compare
from metadata_server_testbed.compare import neighbour_table
from metadata_server_testbed.compare.harness import DOM0_TOOLS
from metadata_server_testbed.compare.image import image_tools
from metadata_server_testbed.compare.leftovers import Scope, find_leftovers
from metadata_server_testbed.compare.netns import namespaces
from metadata_server_testbed.compare.stats import percentile

from tests.support.requirements import need_root, need_tools, root_fixture

PNG = b"\x89PNG\r\n\x1a\n"
GUESTS = 3


@pytest.fixture(scope="module")
def limits_before() -> neighbour_table.Limits:
    """The host's ARP table limits before the comparison (it raises them for its runs)."""
    return neighbour_table.read()


@pytest.fixture(scope="module")
@root_fixture
def result(
    tmp_path_factory: pytest.TempPathFactory, limits_before: neighbour_table.Limits
) -> tuple[int, Path, dict[str, Any]]:
    need_root()
    need_tools(*DOM0_TOOLS, *image_tools())
    out = tmp_path_factory.mktemp("compare") / "out"
    status = compare.main(
        [
            "--guests", str(GUESTS), "--methods", "network,iso", "--concurrency", "3",
            "--faults", "--fault-guests", "1", "--out", str(out),
        ]
    )  # fmt: skip
    return status, out, json.loads((out / "raw.json").read_text())


def test_every_guest_is_configured_by_both_methods(
    result: tuple[int, Path, dict[str, Any]],
) -> None:
    status, _, data = result
    assert status == 0, data["errors"]
    assert [(r["method"], r["guests"]) for r in data["runs"]] == [("network", 3), ("iso", 3)]
    for run in data["runs"]:
        assert (run["configured"], run["failed"], run["errors"]) == (GUESTS, 0, [])
        guests = run["guest_records"]
        assert sorted(g["index"] for g in guests) == [1, 2, 3]
        for guest in guests:
            assert guest["state"] == "configured" and guest["via"] == run["method"]
            assert 0 < guest["seconds"] < 30
            assert guest["configured_at"] == pytest.approx(
                guest["boot_start"] + guest["seconds"], abs=1e-3
            )


def test_dom0_costs_add_up(result: tuple[int, Path, dict[str, Any]]) -> None:
    network, iso = (run["dom0"] for run in result[2]["runs"])
    # each guest: GET config.txt, GET user-data, POST status; its lease, read from dnsmasq's
    # lease file (no process per lease)
    assert network["http_requests"] == 3 * GUESTS and network["leases_recorded"] == GUESTS
    assert network["dhcp_datagrams"] >= 2 * GUESTS and network["xl_calls"] == 0
    assert 0 <= network["dhcp_cpu_s"] <= network["cpu_s"]  # dnsmasq alone: a few ms
    # each guest: one provisioning request, xl block-attach and block-detach, one ISO
    assert (iso["provision_calls"], iso["xl_calls"], iso["http_requests"]) == (
        GUESTS,
        2 * GUESTS,
        0,
    )
    assert iso["iso_bytes"] > 0 and iso["tasks"] > 2 * GUESTS
    assert 0 < iso["standin_cpu_s"] <= iso["cpu_s"]
    for cost in (network, iso):
        assert cost["cpu_s"] >= cost["cpu_boot_s"] > 0 and cost["write_bytes"] > 0


def test_faults_are_survived_and_counted(result: tuple[int, Path, dict[str, Any]]) -> None:
    faults = {(f["fault"], f["method"]): f for f in result[2]["faults"]}
    assert len(faults) == 6
    assert all(f["survived"] and f["leftovers"] == [] for f in faults.values()), faults
    assert faults[("server-down", "network")]["configured"] == 1  # through the ISO fallback
    assert faults[("never-signals", "iso")]["detected"] == 1  # Dom0's wait timed out
    assert faults[("never-signals", "network")]["states"] == {"fetched": 1}  # nobody noticed
    assert faults[("killed", "iso")]["detected"] == 1
    assert faults[("killed", "network")]["stuck"] == 1


def test_report_charts_and_raw_data_agree(result: tuple[int, Path, dict[str, Any]]) -> None:
    _, out, data = result
    report = (out / "report.md").read_text()
    for name in ("distribution.png", "scaling.png", "dom0_cost.png"):
        assert (out / name).read_bytes().startswith(PNG)
        assert f"![{name}]({name})" in report
    with open(out / "guests.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * GUESTS
    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert [(r["method"], r["configured"], r["leftovers"]) for r in runs] == [
        ("network", "3", "0"), ("iso", "3", "0"),
    ]  # fmt: skip
    for run in data["runs"]:
        seconds = [g["seconds"] for g in run["guest_records"]]
        table = report.split(f"## Time to configured: {run['method']}")[1]
        row = f"| {GUESTS} | {GUESTS} | 0 | {percentile(seconds, 50):.3f} |"
        assert row in table
        assert sorted(float(r["seconds"]) for r in rows if r["method"] == run["method"]) == sorted(
            seconds
        )
    assert f"**N={GUESTS}: " in report and "| killed | iso | 1 |" in report
    assert "What was real and what stood in for Xen" in report


def test_nothing_is_left_behind(
    result: tuple[int, Path, dict[str, Any]], limits_before: neighbour_table.Limits
) -> None:
    data = result[2]
    work, prefix = Path(data["settings"]["work"]), data["settings"]["prefix"]
    assert data["leftovers"] == [] and all(run["leftovers"] == [] for run in data["runs"])
    assert find_leftovers(Scope(prefix, work)) == []  # looked for again, independently
    assert not work.exists()
    # the ARP table's limits, raised for the runs, are the host's own again
    assert neighbour_table.read() == limits_before
    assert data["host"]["neighbour_table"][0] == limits_before.describe()
    assert [name for name in namespaces() if name.startswith(prefix)] == []
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=10).stdout
    assert str(work) not in loops
    with open("/proc/self/mountinfo") as mounts:
        assert str(work) not in mounts.read()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                assert str(work).encode() not in cmdline.read()
        except OSError:
            continue
