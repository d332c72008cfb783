"""The run's plan: guests' identities, and a server configuration the server accepts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from metadata_server_testbed.compare.plan import (
    GATEWAY,
    METADATA_ADDRESS,
    ServerLayout,
    plan_guests,
    server_config,
)

from metadata_server.config import build_settings
from metadata_server.model import parse_vm


def test_guests_are_distinct_and_in_the_benchmark_range() -> None:
    plans = plan_guests(1000)
    assert len({p.mac for p in plans}) == len({p.address for p in plans}) == 1000
    assert len({p.uuid for p in plans}) == len({p.hostname for p in plans}) == 1000
    benchmark = ipaddress.IPv4Network("198.18.0.0/15")
    assert all(ipaddress.IPv4Address(p.address) in benchmark for p in plans)
    assert GATEWAY not in {p.address for p in plans}
    assert [p.domid for p in plans[:3]] == [1, 2, 3]


@pytest.mark.parametrize("count", [0, 60001], ids=["none", "too-many"])
def test_guest_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="the number of guests must be"):
        plan_guests(count)


def test_records_are_valid_guests() -> None:
    for plan in plan_guests(3):
        spec = parse_vm(plan.record()).spec
        assert spec.mac == plan.mac and spec.ipv4.address == plan.address


@pytest.mark.parametrize(
    ("dhcp", "guest_api"),
    [(True, True), (False, True), (True, False)],
    ids=["network", "iso", "server-down"],
)
def test_server_accepts_the_configuration(tmp_path: Path, dhcp: bool, guest_api: bool) -> None:
    layout = ServerLayout(tmp_path, tmp_path / "dhcp", tmp_path / "admin.sock", dhcp, guest_api)
    path = tmp_path / "server.toml"
    path.write_text(server_config(layout))
    settings = build_settings(config_file=path, env={}, flags={})
    assert settings.admin.listen.unix_path == str(tmp_path / "admin.sock")
    assert settings.bridge == "br0"
    listen = settings.guest.listen[0]
    assert (listen.host == METADATA_ADDRESS) is guest_api
    assert settings.dhcp.manage is dhcp
    if dhcp:
        [subnet] = settings.dhcp.subnets
        assert str(subnet.cidr) == "198.18.0.0/16"
