"""How the harness starts guests: one session for all of them (`grouped`) or one each
(`peers`), and always a process group of their own so a guest is killed whole."""

from __future__ import annotations

import os
import subprocess

import pytest
from metadata_server_testbed.compare.cpu_share import GuestCpu


@pytest.mark.parametrize("mode", ["grouped", "peers"])
def test_a_guest_is_its_own_process_group_and_shares_a_session_only_when_grouped(
    mode: str,
) -> None:
    cpu = GuestCpu.make(mode)
    guest = subprocess.Popen(["sleep", "30"], **cpu.spawn_options())
    try:
        assert os.getpgid(guest.pid) == guest.pid
        shares_session = os.getsid(guest.pid) == os.getsid(0)
        assert shares_session == (mode == "grouped")
    finally:
        guest.kill()
        guest.wait()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="grouped, peers"):
        GuestCpu.make("fair")
