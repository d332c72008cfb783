"""The guest scripts stay small, POSIX and shellcheck-clean, so customers can audit them."""

from __future__ import annotations

import itertools
import re
import subprocess

import pytest

from tests.guest_init.conftest import GUEST_INIT
from tests.support.requirements import need_tools

SCRIPTS = ["metadata-init", "install.sh", "dhcp-hook"]
SHELLS = {"dash": ["dash"], "bash": ["bash", "--posix"], "busybox-ash": ["busybox", "ash"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script: str) -> None:
    tools = need_tools("shellcheck")
    result = subprocess.run(
        [tools["shellcheck"], "--shell=sh", "--severity=style", str(GUEST_INIT / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("shell", list(SHELLS))
@pytest.mark.parametrize("script", SCRIPTS)
def test_parses_under(shell: str, script: str) -> None:
    argv = SHELLS[shell]
    need_tools(argv[0])
    result = subprocess.run(
        [*argv, "-n", str(GUEST_INIT / script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def code_lines(text: str) -> list[str]:
    """The lines a reader has to follow: not blank, not a comment."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_metadata_init_has_at_most_300_code_lines() -> None:
    text = (GUEST_INIT / "metadata-init").read_text()
    assert text.startswith("#!/bin/sh\n")
    assert len(code_lines(text)) <= 300


def test_metadata_init_is_at_most_100_columns() -> None:
    """Tabs count as 8 columns, as a terminal shows them."""
    lines = (GUEST_INIT / "metadata-init").read_text().expandtabs(8).splitlines()
    wide = [f"{number}: {len(line)}" for number, line in enumerate(lines, 1) if len(line) > 100]
    assert wide == []


def test_metadata_init_header_points_at_the_readme() -> None:
    """About ten lines of header; the format and the settings are described in the README."""
    lines = (GUEST_INIT / "metadata-init").read_text().splitlines()
    header = list(itertools.takewhile(lambda line: line.startswith("#"), lines))
    assert 8 <= len(header) <= 12, header
    assert '"The guest boot script"' in " ".join(header)
    assert "\n## The guest boot script\n" in (GUEST_INIT.parent / "README.md").read_text()


def test_metadata_init_main_reads_as_its_steps() -> None:
    text = (GUEST_INIT / "metadata-init").read_text()
    main = re.search(r"^main\(\) \{\n(.*?)^\}\nmain \"\$@\"\n\Z", text, re.M | re.S)
    assert main is not None
    assert main.group(1).split() == [
        "load_settings",
        '"$@"',
        "skip_if_configured",
        "obtain_document",
        "check_document",
        "apply_all",
        "report",
        "configured",
    ]
    assert len(re.findall(r"^fail_if_refused\(\) \{", text, re.M)) == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_never_evaluates(script: str) -> None:
    """No eval, no sourcing: nothing the server sends can become code."""
    for number, line in enumerate((GUEST_INIT / script).read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        words = code.replace(";", " ").split()
        assert "eval" not in words, f"{script}:{number}: {line}"
        assert "." not in words[:1] and "source" not in words[:1], f"{script}:{number}: {line}"
