"""The harness's room in the host's ARP table: raised for the largest run, put back
after it (also when the run fails), never lowered, and said in the report. The sysctl
directory is a temporary one here; the harness's own runs (tests/testbed, root) use the
real /proc/sys."""

from __future__ import annotations

from pathlib import Path

import pytest
from metadata_server_testbed.compare import neighbour_table
from metadata_server_testbed.compare.neighbour_table import Limits, needed, raised_for
from metadata_server_testbed.compare.report import real_and_standin


def sysctl(tmp_path: Path, *values: int) -> Path:
    for name, value in zip(neighbour_table.NAMES, values, strict=True):
        (tmp_path / name).write_text(f"{value}\n")
    return tmp_path


def test_room_for_a_thousand_guests_on_the_kernel_defaults() -> None:
    room = needed(Limits(128, 512, 1024), 1000)
    assert room == Limits(128, 2512, 5024)


def test_limits_already_large_enough_are_kept() -> None:
    big = Limits(1024, 100_000, 200_000)
    assert needed(big, 1000) == Limits(1024, 100_000, 200_000)


def test_raised_while_the_block_runs_and_put_back(tmp_path: Path) -> None:
    root = sysctl(tmp_path, 128, 512, 1024)
    with raised_for(200, root) as (before, during):
        assert neighbour_table.read(root) == during == Limits(128, 912, 1824)
        assert before == Limits(128, 512, 1024)
    assert neighbour_table.read(root) == Limits(128, 512, 1024)


def test_put_back_when_the_comparison_fails(tmp_path: Path) -> None:
    root = sysctl(tmp_path, 128, 512, 1024)
    with pytest.raises(RuntimeError), raised_for(50, root):
        raise RuntimeError("the run broke")
    assert neighbour_table.read(root) == Limits(128, 512, 1024)


def test_the_report_says_what_was_raised() -> None:
    host = {"hypervisor": "standin", "neighbour_table": ["128/512/1024", "128/2512/5024"]}
    text = "\n".join(real_and_standin(host))
    assert "raised from 128/512/1024 to 128/2512/5024" in text
    unchanged = {"hypervisor": "standin", "neighbour_table": ["128/512/1024"] * 2}
    assert "ARP" not in "\n".join(real_and_standin(unchanged))
