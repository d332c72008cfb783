"""`metadata-server compare`'s arguments: what is accepted, what is refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from metadata_server_testbed.cli import build_parser, options_from
from metadata_server_testbed.compare.harness import missing_requirements


@pytest.mark.parametrize(
    ("argv", "sweep", "methods", "concurrency"),
    [
        (["--out", "d"], (10,), ("network", "iso"), 20),
        (["--out", "d", "--guests", "7", "--concurrency", "3"], (7,), ("network", "iso"), 3),
        (
            ["--out", "d", "--sweep", "1,10, 50,200", "--guests", "7"],
            (1, 10, 50, 200),
            ("network", "iso"),
            20,
        ),
        (["--out", "d", "--methods", "iso,iso"], (10,), ("iso",), 20),
        (["--out", "d", "--methods", "iso,network"], (10,), ("iso", "network"), 20),
    ],
    ids=["defaults", "guests", "sweep-wins", "dedupe", "order-kept"],
)
def test_accepted(
    argv: list[str], sweep: tuple[int, ...], methods: tuple[str, ...], concurrency: int
) -> None:
    options = options_from(build_parser().parse_args(argv))
    assert (options.sweep, options.methods, options.concurrency) == (sweep, methods, concurrency)
    assert options.out == Path("d") and options.hypervisor == "standin"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--out", "d", "--guests", "0"],
        ["--out", "d", "--sweep", "1,x"],
        ["--out", "d", "--sweep", ","],
        ["--out", "d", "--methods", "network,floppy"],
        ["--out", "d", "--concurrency", "-2"],
        ["--out", "d", "--guest-timeout", "0"],
        ["--out", "d", "--hypervisor", "kvm"],
    ],
    ids=[
        "no-out",
        "zero-guests",
        "bad-sweep",
        "empty-sweep",
        "bad-method",
        "bad-concurrency",
        "bad-timeout",
        "bad-hypervisor",
    ],
)
def test_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_xen_is_refused_with_the_reason() -> None:
    options = options_from(build_parser().parse_args(["--out", "d", "--hypervisor", "xen"]))
    assert any("real domains" in problem for problem in missing_requirements(options))
