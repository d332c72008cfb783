"""Rendering DHCP files from records: every guest's reservation and options, a guest that
cannot be reserved left out (named, with the reason) while every other guest is written,
and each daemon's own checker accepting the result."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest

from metadata_server.dhcp.render import DAEMONS, DhcpPlan, render
from metadata_server.dhcp.subnets import Subnet
from metadata_server.dhcp.templates import template_environment
from metadata_server.model import VM, IPv4Config, State, parse_vm
from tests.support.records import mac_of
from tests.support.requirements import need_tools

SUBNETS = (
    Subnet(
        ipaddress.IPv4Network("198.18.0.0/24"),
        ipaddress.IPv4Address("198.18.0.1"),
        "br0",
        ("198.18.0.1",),
        "guests.internal",
        600,
    ),
    Subnet(
        ipaddress.IPv4Network("198.19.0.0/24"),
        ipaddress.IPv4Address("198.19.0.254"),
        "br1",
        (),
        None,
        3600,
    ),
)
PLAN = DhcpPlan(SUBNETS, kea_control_socket="/tmp/kea.sock", kea_lease_file="/tmp/kea.csv")


def vm(n: int, address: str, hostname: str | None = None, prefix: int = 24) -> VM:
    body = {"hostname": hostname or f"guest{n}", "ipv4": {"address": address, "prefix": prefix}}
    spec = parse_vm(body, mac=mac_of(n)).spec
    return VM(spec, "id", State.REGISTERED, {}, None, 0.0, 0.0)


GUESTS = [vm(1, "198.18.0.11"), vm(2, "198.18.0.12"), vm(3, "198.19.0.13")]


def test_dnsmasq_files() -> None:
    files = render("dnsmasq", GUESTS, PLAN, template_environment()).files
    assert files["dnsmasq-hosts"].splitlines() == [
        f"{mac_of(1)},198.18.0.11,guest1",
        f"{mac_of(2)},198.18.0.12,guest2",
        f"{mac_of(3)},198.19.0.13,guest3",
    ]
    conf = files["dnsmasq.conf"]
    assert "dhcp-range=set:subnet0,198.18.0.0,static,255.255.255.0,600" in conf
    assert (
        "dhcp-option=tag:subnet0,option:classless-static-route,169.254.169.254/32,198.18.0.1,0.0.0.0/0,198.18.0.1"
        in conf
    )
    assert (
        "dhcp-option=tag:subnet1,option:classless-static-route,169.254.169.254/32,198.19.0.254,0.0.0.0/0,198.19.0.254"
        in conf
    )
    assert 'dhcp-option=tag:subnet0,224,"http://169.254.169.254"' in conf
    assert "set:" not in files["dnsmasq-hosts"], "tags in hosts files crash dnsmasq 2.90 on SIGHUP"


def test_kea_file_is_json_with_reservations_per_subnet() -> None:
    config = json.loads(
        render("kea", GUESTS, PLAN, template_environment()).files["kea-dhcp4.conf"]
    )["Dhcp4"]
    assert config["interfaces-config"]["interfaces"] == ["br0", "br1"]
    first, second = config["subnet4"]
    assert [r["ip-address"] for r in first["reservations"]] == ["198.18.0.11", "198.18.0.12"]
    assert [r["hostname"] for r in second["reservations"]] == ["guest3"]
    options = {o.get("name", o.get("code")): o["data"] for o in first["option-data"]}
    assert options[121] == "20A9FEA9FEC612000100C6120001"
    assert (
        options["metadata-url"] == "http://169.254.169.254" and options["routers"] == "198.18.0.1"
    )


def test_dhcpd_file() -> None:
    conf = render("dhcpd", GUESTS, PLAN, template_environment()).files["dhcpd.conf"]
    assert (
        "option classless-static-routes 32, 169, 254, 169, 254, 198, 18, 0, 1, 0, 198, 18, 0, 1;"
        in conf
    )
    assert f"hardware ethernet {mac_of(3)};\n  fixed-address 198.19.0.13;" in conf


def stored(n: int, address: str, **fields: object) -> VM:
    """A record as the store may hold it from before a check: fields set without parse_vm."""
    good = vm(n, address)
    return replace(good, spec=replace(good.spec, **fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("guests", "problem"),
    [
        ([vm(1, "198.20.0.5")], "outside every configured subnet"),
        ([vm(1, "198.18.0.1")], "is the gateway of 198.18.0.0/24"),
        ([vm(1, "198.19.0.255", prefix=16)], "network or broadcast address"),
        ([vm(2, "198.18.0.11"), vm(1, "198.18.0.11")], "also reserved by"),
        ([vm(1, "198.18.0.11", "other"), vm(1, "198.18.0.12")], "MAC appears twice"),
        ([stored(1, "198.18.0.11", hostname="web\n")], "host name is not one lower-case"),
        ([stored(1, "198.18.0.11", hostname="Web")], "host name is not one lower-case"),
        ([stored(1, "198.18.0.11", mac="02:00:C6:12:00:01")], "MAC is not six lower-case"),
        ([stored(1, "198.18.0.11", mac="02:00:c6:12:00:01\n")], "MAC is not six lower-case"),
        ([stored(1, "198.18.0.11", ipv4=IPv4Config("198.18.0.x", 24, None))], "not an IPv4 address"),
        ([stored(1, "198.18.0.11", hostname='x"; option routers 6.6.6.6; #')], "host name"),
    ],
    ids=[
        "outside", "gateway", "broadcast", "duplicate-address", "duplicate-mac",
        "stored-hostname-newline", "stored-hostname-upper", "stored-mac-upper",
        "stored-mac-newline", "stored-address", "stored-hostname-directive",
    ],
)  # fmt: skip
@pytest.mark.parametrize("daemon", DAEMONS)
def test_a_bad_guest_is_left_out_and_the_rest_written(
    daemon: str, guests: list[VM], problem: str
) -> None:
    """Two good guests around the bad one: both are in the files, the bad one is named."""
    good = [vm(8, "198.18.0.98"), vm(9, "198.18.0.99")]
    rendered = render(daemon, [good[0], *guests, good[1]], PLAN, template_environment())
    assert rendered.hosts == len(good) + len(guests) - 1
    (left,) = rendered.left_out
    bad = guests[-1]
    assert (left.mac, left.address) == (bad.mac, bad.spec.ipv4.address)
    assert problem in left.reason
    text = "".join(rendered.files.values())
    for guest in good:
        assert guest.mac in text and guest.spec.ipv4.address in text
    assert "6.6.6.6" not in text
    if daemon == "kea":
        json.loads(rendered.files["kea-dhcp4.conf"])  # still JSON: one guest cannot break it


def test_every_bad_guest_is_listed() -> None:
    rendered = render(
        "dnsmasq",
        [vm(1, "198.20.0.5"), vm(2, "198.18.0.1"), vm(3, "198.18.0.11")],
        PLAN,
        template_environment(),
    )
    assert [(g.mac, g.address) for g in rendered.left_out] == [
        (mac_of(1), "198.20.0.5"),
        (mac_of(2), "198.18.0.1"),
    ]
    assert rendered.files["dnsmasq-hosts"] == f"{mac_of(3)},198.18.0.11,guest3\n"


def test_a_template_naming_an_unknown_variable_fails_loudly(tmp_path: Path) -> None:
    for name in ("dnsmasq.conf.j2", "dnsmasq-hosts.j2"):
        (tmp_path / name).write_text("{{ no_such_variable }}\n")
    with pytest.raises(jinja2.UndefinedError):
        render("dnsmasq", GUESTS, PLAN, template_environment(tmp_path))


def test_the_daemons_own_checkers_accept_the_files(tmp_path: Path) -> None:
    tools = need_tools("dnsmasq", "kea-dhcp4", "dhcpd")
    files = render("dnsmasq", GUESTS, PLAN, template_environment()).files
    check = files["dnsmasq.conf"] + "".join(
        f"dhcp-host={line}\n" for line in files["dnsmasq-hosts"].splitlines()
    )
    (tmp_path / "dnsmasq-check.conf").write_text(check)
    subprocess.run(
        [tools["dnsmasq"], "--test", f"--conf-file={tmp_path}/dnsmasq-check.conf"],
        check=True,
        capture_output=True,
    )
    kea = json.loads(render("kea", GUESTS, PLAN, template_environment()).files["kea-dhcp4.conf"])
    kea["Dhcp4"]["interfaces-config"]["interfaces"] = ["*"]
    for subnet in kea["Dhcp4"]["subnet4"]:
        subnet.pop("interface")
    (tmp_path / "kea.conf").write_text(json.dumps(kea))
    subprocess.run(
        [tools["kea-dhcp4"], "-t", str(tmp_path / "kea.conf")], check=True, capture_output=True
    )
    (tmp_path / "dhcpd.conf").write_text(
        render("dhcpd", GUESTS, PLAN, template_environment()).files["dhcpd.conf"]
    )
    subprocess.run(
        [tools["dhcpd"], "-t", "-q", "-cf", str(tmp_path / "dhcpd.conf")],
        check=True,
        capture_output=True,
    )


def test_templates_ship_in_the_package() -> None:
    import dhcp_templates

    directory = Path(dhcp_templates.__file__).parent
    assert {path.name for path in directory.glob("*.j2")} == {
        "dnsmasq.conf.j2", "dnsmasq-hosts.j2", "kea-dhcp4.conf.j2", "dhcpd.conf.j2"
    }  # fmt: skip
