"""`metadata-server compare`'s arguments: what is accepted, what is refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from metadata_server_testbed.cli import build_parser, options_from
from metadata_server_testbed.compare.harness import missing_requirements
from metadata_server_testbed.compare.report import real_and_standin


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


def test_xen_without_its_image_is_refused_with_the_reason() -> None:
    options = options_from(build_parser().parse_args(["--out", "d", "--hypervisor", "xen"]))
    assert any("--xen-image and --xen-kernel" in p for p in missing_requirements(options))


def test_xen_with_missing_files_and_faults_is_refused_naming_each(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    argv = ["--out", "d", "--hypervisor", "xen", "--faults", "--xen-image",
            str(tmp_path / "nope.qcow2"), "--xen-kernel", str(kernel)]  # fmt: skip
    problems = missing_requirements(options_from(build_parser().parse_args(argv)))
    assert any(f"--xen-image {tmp_path / 'nope.qcow2'} does not exist" in p for p in problems)
    assert not any("--xen-kernel" in p for p in problems)
    assert any("--faults runs on the stand-ins only" in p for p in problems)


def test_the_report_of_a_xen_run_says_nothing_stood_in() -> None:
    text = "\n".join(real_and_standin({"hypervisor": "xen"}))
    assert "Stood in: nothing." in text and "PV domUs" in text
    assert "stand-in" not in text.split("Stood in:")[1]
