"""The report, the raw data and the charts, from a comparison made up here (no root)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from metadata_server_testbed.compare.charts import draw_all
from metadata_server_testbed.compare.report import render
from metadata_server_testbed.compare.results import (
    Comparison,
    FaultRecord,
    from_json,
    guests_csv,
    runs_csv,
    to_json,
)

from tests.testbed.compare.test_stats import run

PNG = b"\x89PNG\r\n\x1a\n"


def comparison(**overrides: object) -> Comparison:
    made = Comparison(
        started=1000.0,
        finished=1030.0,
        settings={"methods": ["network", "iso"], "sweep": [2, 200], "concurrency": 4,
                  "hypervisor": "standin"},
        host={"kernel": "6.1", "cpus": 2, "iso9660_in_kernel": False, "hypervisor": "standin"},
        runs=[
            run("network", 2, [0.2, 0.3], cpu=1.0),
            run("iso", 2, [0.5, 0.6], cpu=0.4),
            run("network", 200, [1.0] * 199 + [11.0], cpu=100.0),
            run("iso", 200, [4.0] * 200, cpu=30.0),
        ],
        faults=[
            FaultRecord(
                fault="killed", method="iso", guests=1, configured=0, detected=1, stuck=0,
                dom0_healthy=True, expected="Survives if ...", survived=True,
                states={"failed": 1}, messages=["state failed (domain 1 died)"],
            )
        ],
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(made, key, value)
    return made


def test_report_has_a_table_per_method_the_verdicts_and_the_goal() -> None:
    text = render(comparison(), ["distribution.png"])
    assert "## Time to configured: network" in text and "## Time to configured: iso" in text
    assert "| 200 | 200 | 0 | 1.000 |" in text  # network N=200: p50 1 s
    assert "**N=2: network wins** on time: median 0.250 s against 0.550 s" in text
    assert "**N=200: network wins**" in text
    assert "iso costs" not in text and "network costs 3.33x as much" in text
    assert "Goal" in text and "**not met** (199/200 within 10 s, slowest 11.000 s" in text
    assert "| killed | iso | 1 | 0 | 1 | 0 | yes | 0 | yes |" in text
    assert "Nothing: the final check after cleanup found no" in text
    assert "mount.iso9660" in text  # this kernel has no iso9660: the stand-in is named
    assert "![distribution.png](distribution.png)" in text
    assert "Interrupted" not in text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"interrupted": True}, "**Interrupted**"),
        ({"leftovers": ["network namespace mscX-d0"]}, "- network namespace mscX-d0"),
        ({"errors": ["dnsmasq did not start"]}, "## Errors"),
        ({"notes": ["no charts: no module named matplotlib"]}, "## Notes\n\n- no charts"),
        ({"runs": []}, "No N has results for two methods"),
    ],
    ids=["interrupted", "leftovers", "errors", "notes", "no-runs"],
)
def test_report_says_what_went_wrong(overrides: dict[str, object], expected: str) -> None:
    assert expected in render(comparison(**overrides))


def test_raw_data_round_trips_and_counts_match() -> None:
    made = comparison()
    data = json.loads(json.dumps(to_json(made)))
    assert from_json(data) == made
    rows = list(csv.DictReader(io.StringIO(guests_csv(made))))
    assert len(rows) == 2 + 2 + 200 + 200
    runs = list(csv.DictReader(io.StringIO(runs_csv(made))))
    assert [(r["method"], r["guests"], r["configured"]) for r in runs] == [
        ("network", "2", "2"), ("iso", "2", "2"), ("network", "200", "200"), ("iso", "200", "200"),
    ]  # fmt: skip
    assert runs[0]["dom0_cpu_s"] == "1.0" and runs[0]["leftovers"] == "0"


def test_charts_are_pngs(tmp_path: Path) -> None:
    made = draw_all(comparison(), ["network", "iso"], tmp_path)
    assert made == ["distribution.png", "scaling.png", "dom0_cost.png"]
    for name in made:
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_no_charts_without_runs(tmp_path: Path) -> None:
    assert draw_all(comparison(runs=[]), ["network", "iso"], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
