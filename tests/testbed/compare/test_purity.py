"""The harness's figures and report are pure: plan, results, statistics and rendering
never import I/O (the same rule and walker as the core's, tests/test_purity.py)."""

from __future__ import annotations

import pytest

from tests.test_purity import FORBIDDEN, _closure

PURE = ["compare.plan", "compare.results", "compare.stats", "compare.report"]


@pytest.mark.parametrize("module", PURE)
def test_pure_parts_import_no_io(module: str) -> None:
    reached = {name.split(".")[0] for name in _closure(module, "metadata_server_testbed")}
    assert not reached & FORBIDDEN, f"{module} reaches {sorted(reached & FORBIDDEN)}"
