"""The lab's commands stay what the README says: `./lab/run` (the one command that builds
and boots the lab) and `./lab/build` exist, are executable and shellcheck-clean."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.requirements import need_tools

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["lab/run", "lab/build"])
def test_command_is_documented_executable_and_clean(command: str) -> None:
    assert f"./{command}" in (ROOT / "README.md").read_text()
    assert os.access(ROOT / command, os.X_OK)
    shellcheck = need_tools("shellcheck")["shellcheck"]
    done = subprocess.run(
        [shellcheck, "-x", "--shell=sh", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
