"""The harness's guest-side scripts stay POSIX and shellcheck-clean, like guest_init's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.requirements import need_tools

COMPARE = Path(__file__).resolve().parents[3] / "testbed" / "metadata_server_testbed" / "compare"


@pytest.mark.parametrize("script", ["compare-boot", "udhcpc.script", "mount.iso9660"])
def test_shellcheck_clean(script: str) -> None:
    tools = need_tools("shellcheck")
    result = subprocess.run(
        [tools["shellcheck"], "--shell=sh", str(COMPARE / script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
