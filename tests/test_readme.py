"""The README stays true: its two commands exist, CI runs the test command, and the
configuration table lists every setting the code knows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metadata_server.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", ["./scripts/demo", "./scripts/test"])
def test_readme_commands_exist(command: str) -> None:
    assert f"{command} " in README
    assert os.access(ROOT / command, os.X_OK)


def test_ci_runs_the_readme_test_command() -> None:
    lines = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()]
    assert lines[-1] == "exec ./scripts/test"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.path)
def test_every_setting_is_documented(setting: object) -> None:
    assert f"| `{setting.path}` |" in README  # type: ignore[attr-defined]
