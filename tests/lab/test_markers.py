"""The lab's marker lines, both ways: what dom0 prints is what the host reads, wherever
on a console line it lands, and a cut or foreign line is never taken for a pass."""

from __future__ import annotations

import pytest

from lab import markers


@pytest.mark.parametrize(
    ("line", "check_id", "status", "detail"),
    [
        pytest.param(
            markers.check_line("g1.hostname", "ok", "fine"), "g1.hostname", "ok", "fine", id="ok"
        ),
        pytest.param(
            markers.check_line("x", "FAIL", "a\r\nb"), "x", "FAIL", "a b", id="newline-in-detail"
        ),
        pytest.param(markers.check_line("guard", "SKIP"), "guard", "SKIP", "", id="skip-no-detail"),
        pytest.param(
            "[   42.1] xen: foo LAB-CHECK a.b ok after noise",
            "a.b",
            "ok",
            "after noise",
            id="after-kernel-noise",
        ),
        pytest.param("LAB-CHECK a ok detail\r", "a", "ok", "detail", id="serial-cr"),
    ],
)
def test_checks_read_back(line: str, check_id: str, status: str, detail: str) -> None:
    report = markers.parse(line)
    assert report.checks == {check_id: markers.Check(status, detail)}


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("LAB-CHECK a maybe", id="unknown-status"),
        pytest.param("LAB-CHECK a", id="cut-before-status"),
        pytest.param("LAB-CHEC", id="cut-in-word"),
        pytest.param("LAB-CHECK -a ok", id="bad-id"),
        pytest.param("LAB-FIGURE t -1", id="negative-figure"),
        pytest.param("LAB-END network okay", id="end-bad-outcome"),
    ],
)
def test_malformed_lines_are_not_markers(line: str) -> None:
    report = markers.parse(line)
    assert (report.checks, report.figures, report.ended, report.steps) == ({}, {}, {}, [])


def test_a_failure_is_never_overwritten_by_a_later_pass() -> None:
    text = "\n".join([markers.check_line("a", "FAIL", "x"), markers.check_line("a", "ok", "y")])
    assert markers.parse(text).failed == {"a": markers.Check("FAIL", "x")}


def test_figures_steps_and_end() -> None:
    text = "\n".join(
        [
            markers.step_line(41.23, "scenario network starts"),
            markers.figure_line("network.boot_to_configured.g1", 61.04),
            markers.end_line("network", True),
        ]
    )
    report = markers.parse(text)
    assert report.steps == [(41.2, "scenario network starts")]
    assert report.figures == {"network.boot_to_configured.g1": 61.0}
    assert report.ended == {"network": True}


@pytest.mark.parametrize(
    ("call", "args"),
    [
        pytest.param(markers.check_line, ("has space", "ok"), id="check-id-space"),
        pytest.param(markers.check_line, ("a", "passed"), id="check-status"),
        pytest.param(markers.figure_line, ("a", -1.0), id="figure-negative"),
        pytest.param(markers.figure_line, ("a\nb", 1.0), id="figure-newline"),
    ],
)
def test_writers_refuse_what_the_reader_would_misread(
    call: object, args: tuple[object, ...]
) -> None:
    with pytest.raises(ValueError, match=r"^bad (check|figure) "):
        call(*args)  # type: ignore[operator]
