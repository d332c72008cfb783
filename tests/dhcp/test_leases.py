"""Reading the daemons' lease databases (dhcp/leases.py) from files written the way each
daemon writes them: dnsmasq's rewritten file, Kea's appended CSV and dhcpd's appended
blocks, with rows still being written, rewrites, rotations, truncations and junk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metadata_server.dhcp.leases import Lease, LeaseFile

NOW = 1_800_000_000.0
A, B = "02:00:c6:12:00:0a", "02:00:c6:12:00:0b"
KEA_HEADER = "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n"


def kea_row(
    address: str, mac: str, lifetime: int = 600, expire: float = NOW + 600, state: int = 0
) -> str:
    return f"{address},{mac},,{lifetime},{int(expire)},1,0,0,guest,{state},\n"


def dhcpd_block(
    address: str, mac: str, state: str = "active", ends: str = "1 2027/02/15 08:00:00"
) -> str:
    return (
        f"lease {address} {{\n  starts 4 2026/12/01 16:00:00;\n  ends {ends};\n"
        f'  binding state {state};\n  hardware ethernet {mac};\n  client-hostname "g";\n}}\n'
    )


def live(reader: LeaseFile) -> dict[str, str]:
    return {mac: lease.address for mac, lease in reader.read(NOW).items()}


CASES = [
    (
        "dnsmasq",
        f"{int(NOW) + 600} {A} 198.18.0.61 web1 01:{A}\n0 {B} 198.18.0.62 * *\n",
        {A: "198.18.0.61", B: "198.18.0.62"},
    ),
    ("dnsmasq expired", f"{int(NOW) - 1} {A} 198.18.0.61 web1 *\n", {}),
    (
        "dnsmasq junk and a v6 duid line",
        f"duid 00:01:00:01\ngarbage\n{int(NOW) + 60} {A} 198.18.0.61 * *\n",
        {A: "198.18.0.61"},
    ),
    (
        "kea",
        KEA_HEADER + kea_row("198.18.0.61", A) + kea_row("198.18.0.62", B),
        {A: "198.18.0.61", B: "198.18.0.62"},
    ),
    (
        "kea released (lifetime 0)",
        KEA_HEADER + kea_row("198.18.0.61", A) + kea_row("198.18.0.61", A, lifetime=0),
        {},
    ),
    ("kea declined", KEA_HEADER + kea_row("198.18.0.61", A, state=1), {}),
    (
        "kea row still being written",
        KEA_HEADER + kea_row("198.18.0.61", A) + "198.18.0.62,02:00",
        {A: "198.18.0.61"},
    ),
    (
        "dhcpd",
        dhcpd_block("198.18.0.61", A) + dhcpd_block("198.18.0.62", B, ends="never"),
        {A: "198.18.0.61", B: "198.18.0.62"},
    ),
    (
        "dhcpd freed later",
        dhcpd_block("198.18.0.61", A) + dhcpd_block("198.18.0.61", A, state="free"),
        {},
    ),
    ("dhcpd expired", dhcpd_block("198.18.0.61", A, ends="1 2020/01/01 00:00:00"), {}),
    (
        "dhcpd block still being written",
        dhcpd_block("198.18.0.61", A) + "lease 198.18.0.62 {\n  starts",
        {A: "198.18.0.61"},
    ),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_live_leases(
    tmp_path: Path, content: str, expected: dict[str, str], request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.id.split()[0]
    path = tmp_path / "leases"
    path.write_text(content)
    assert live(LeaseFile(kind, path)) == expected


@pytest.mark.parametrize("kind", ["kea", "dhcpd"])
def test_appended_files_are_read_from_where_the_last_read_stopped(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "leases"
    first, second = (
        (KEA_HEADER + kea_row("198.18.0.61", A), kea_row("198.18.0.62", B))
        if kind == "kea"
        else (dhcpd_block("198.18.0.61", A), dhcpd_block("198.18.0.62", B))
    )
    path.write_text(first)
    reader = LeaseFile(kind, path)
    assert live(reader) == {A: "198.18.0.61"}
    offset = reader._offset
    with path.open("a") as handle:
        handle.write(second)
    assert live(reader) == {A: "198.18.0.61", B: "198.18.0.62"}
    assert reader._offset == offset + len(second)
    assert reader.rereads == 0


@pytest.mark.parametrize("how", ["truncated", "rotated"])
def test_a_rewritten_file_is_read_from_the_start(tmp_path: Path, how: str) -> None:
    path = tmp_path / "kea-leases.csv"
    path.write_text(KEA_HEADER + kea_row("198.18.0.61", A) + kea_row("198.18.0.62", B))
    reader = LeaseFile("kea", path)
    assert len(live(reader)) == 2
    if how == "truncated":
        path.write_text(KEA_HEADER)
    else:  # Kea's cleanup: a new file takes the old one's name
        new = tmp_path / "kea-leases.csv.new"
        new.write_text(KEA_HEADER + kea_row("198.18.0.62", B))
        os.replace(new, path)
    assert live(reader) == ({} if how == "truncated" else {B: "198.18.0.62"})
    assert reader.rereads == 1


def test_a_missing_file_holds_no_lease_and_malformed_rows_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.leases"
    reader = LeaseFile("dnsmasq", path)
    assert reader.read(NOW) == {}
    path.write_text(
        f"x y z\n{int(NOW) + 60} {A} 198.18.0.999 * *\n{int(NOW) + 60} {A} 198.18.0.61 * *\n"
    )
    assert reader.read(NOW) == {A: Lease(A, "198.18.0.61", NOW + 60)}
    assert reader.malformed == 2
