"""The guest scripts stay small, POSIX and shellcheck-clean, so customers can audit them."""

from __future__ import annotations

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


def test_metadata_init_is_at_most_300_lines() -> None:
    text = (GUEST_INIT / "metadata-init").read_text()
    assert len(text.splitlines()) <= 300
    assert text.startswith("#!/bin/sh\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_never_evaluates(script: str) -> None:
    """No eval, no sourcing: nothing the server sends can become code."""
    for number, line in enumerate((GUEST_INIT / script).read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        words = code.replace(";", " ").split()
        assert "eval" not in words, f"{script}:{number}: {line}"
        assert "." not in words[:1] and "source" not in words[:1], f"{script}:{number}: {line}"
