"""Skip a test that needs root or a missing tool, but only outside CI.

Under CI=true a missing requirement is a failure: the test command installs everything
the suite needs, so a skip there would hide a broken install.
"""

from __future__ import annotations

import contextvars
import os
import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

# Whether the running test carries the `root` marker (set by tests/conftest.py for each
# test; None outside a test, in module-wide fixtures): `pytest -m "not root"` is the
# suite that runs anywhere, so a test that needs root must say so.
MARKED_ROOT: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "marked_root", default=None
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


F = TypeVar("F", bound=Callable[..., Any])


def root_fixture(function: F) -> F:
    """Tags a fixture that needs root (namespaces, mounts, loop devices): every test that
    uses it, however deep, gets the `root` marker (see tests/conftest.py)."""
    function.__needs_root__ = True  # type: ignore[attr-defined]
    return function


def need_root() -> None:
    if MARKED_ROOT.get() is False:
        pytest.fail("this test needs root: mark it @pytest.mark.root", pytrace=False)
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
