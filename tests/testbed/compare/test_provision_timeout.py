"""An ISO flow whose admin call outlives its timeout fails that guest, not the run: at
200 guests at once the flows queue for Dom0's command slots, and one provision call's
TimeoutError used to end the whole ISO run with every guest counted failed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from metadata_server_testbed import cli as compare
from metadata_server_testbed.compare.admin import AdminApi
from metadata_server_testbed.compare.harness import DOM0_TOOLS
from metadata_server_testbed.compare.image import image_tools

from tests.support.requirements import need_root, need_tools

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


def test_a_provision_call_that_times_out_fails_only_its_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    need_tools(*DOM0_TOOLS, *image_tools())
    real = AdminApi.provision
    timed_out: list[str] = []

    async def first_times_out(
        self: AdminApi, mac: str, domid: int | None, timeout: float
    ) -> dict[str, Any]:
        if not timed_out:
            timed_out.append(mac)
            raise TimeoutError  # what aiohttp raises when the call's total timeout ends
        return await real(self, mac, domid, timeout)

    monkeypatch.setattr(AdminApi, "provision", first_times_out)
    out = tmp_path / "out"
    compare.main(
        [
            "--guests", "2", "--methods", "iso", "--concurrency", "1",
            "--guest-timeout", "20", "--out", str(out),
        ]
    )  # fmt: skip
    raw = json.loads((out / "raw.json").read_text())
    assert raw["errors"] == []
    rows = {
        row["mac"]: row for row in csv.DictReader((out / "guests.csv").read_text().splitlines())
    }
    assert len(rows) == 2 and len(timed_out) == 1
    assert "the admin API did not end the ISO flow in" in rows[timed_out[0]]["problem"]
    (other,) = [row for mac, row in rows.items() if mac != timed_out[0]]
    assert other["state"] == "configured", other
