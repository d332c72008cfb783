"""Skip a test that needs root or a missing tool, but only outside CI.

Under CI=true a missing requirement is a failure: the test command installs everything
the suite needs, so a skip there would hide a broken install.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        _missing("it needs root (network namespaces, mounts)")


def need_tools(*tools: str) -> dict[str, str]:
    """Paths of the given executables; skips (or fails under CI) when one is missing."""
    found: dict[str, str] = {}
    for tool in tools:
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if path is None:
            _missing(f"{tool} is not installed")
        else:
            found[tool] = path
    return found
