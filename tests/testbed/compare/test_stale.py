"""A comparison killed outright (SIGKILL) leaves namespaces and files; the next one
removes them before it starts, but never those of a comparison that still runs."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from metadata_server_testbed.compare import procstats
from metadata_server_testbed.compare.harness import OWNER, sweep_stale
from metadata_server_testbed.compare.netns import ip_batch, namespaces

from tests.support.requirements import need_root, need_tools


def work_dir(parent: Path, name: str, pid: int, started: int | None, prefix: str) -> Path:
    directory = parent / f"msc-{name}"
    (directory / "run1" / "guests").mkdir(parents=True)
    (directory / OWNER).write_text(json.dumps({"pid": pid, "started": started, "prefix": prefix}))
    return directory


@pytest.mark.root
def test_leftovers_of_a_killed_comparison_are_removed(tmp_path: Path) -> None:
    need_root()
    need_tools("ip")
    dead, alive = (f"msc{secrets.token_hex(3)}" for _ in range(2))
    killed = work_dir(tmp_path, "killed", 2**22 + 7, 12345, dead)  # above pid_max: gone
    running = work_dir(tmp_path, "running", os.getpid(), procstats.start_time(os.getpid()), alive)
    ip_batch([f"netns add {dead}r1-d0", f"netns add {alive}r1-d0"])
    try:
        removed = sweep_stale(tmp_path)
        assert f"network namespace {dead}r1-d0" in removed and f"directory {killed}" in removed
        assert not killed.exists() and f"{dead}r1-d0" not in namespaces()
        assert running.exists() and f"{alive}r1-d0" in namespaces()  # its owner still runs
    finally:
        ip_batch(f"netns delete {name}" for name in namespaces() if name.startswith((dead, alive)))
