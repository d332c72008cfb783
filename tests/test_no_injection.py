"""No value the validators accept can start a new line or a new directive in any output.

Property-based: hypothesis draws guests whose every string field (host name, domain,
host, password hash, SSH key comments, metadata keys and values, user-data), and the
settings that reach the same files (`public_url`, a subnet's `bridge`), come from a wide
alphabet biased to line breaks, quotes and separators; whatever the validators take goes
through every format a guest or a daemon reads: `/v1/config` and `/v1/config.txt`, the
DHCP files of dnsmasq, Kea and ISC dhcpd, the DNS zone and its wire names, the NoCloud
and OpenStack documents, the EC2 tree and its listings. Each format is then read back
the way its consumer reads it, and must hold exactly the records and values that went in.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from dnslib import QTYPE, DNSLabel, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadata_server.cloud.ec2 import ec2_tree
from metadata_server.cloud.nocloud import meta_data, network_config, nocloud_files
from metadata_server.cloud.openstack import openstack_files
from metadata_server.cloud.options import CloudOptions
from metadata_server.config import build_settings
from metadata_server.dhcp.render import DhcpPlan, render
from metadata_server.dhcp.subnets import Subnet
from metadata_server.dhcp.templates import template_environment
from metadata_server.dns.answer import Reply, answer
from metadata_server.dns.settings import DnsSettings
from metadata_server.dns.zone import Zone
from metadata_server.documents import DocumentOptions, guest_view, render_guest_document
from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.model import (
    DOMAIN_PATTERN,
    HOSTNAME_PATTERN,
    METADATA_KEY_PATTERN,
    VM,
    State,
    parse_domain,
    parse_hostname,
    parse_metadata,
    parse_password_hash,
    parse_ssh_key,
    parse_user_data,
    parse_vm,
)
from tests.support.records import SAMPLE_HASH, SAMPLE_KEY, mac_of
from tests.support.requirements import need_tools

ZONE = "guests.internal"
KEY_BODY = SAMPLE_KEY.rsplit(" ", 1)[0]
# What breaks lines or directives somewhere: C0, DEL, C1 (NEL), U+2028/9, BOM, quotes,
# the separators of each format (',', ';', '=', '#', braces, ':'), spaces.
NASTY = list("\n\r\t\x00\x0b\x0c\x1c\x1d\x1e\x1f\x7f\x85\x9b\u2028\u2029\ufeff\"'\\;{}#,=: ")
nasty_text = st.text(
    alphabet=st.one_of(st.sampled_from(NASTY), st.characters(), st.sampled_from("aZ0-.")),
    max_size=40,
)


@st.composite
def spliced(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value with one nasty character put at its start, end or anywhere."""
    text = draw(valid)
    where = draw(st.sampled_from([len(text), len(text), 0, draw(st.integers(0, len(text)))]))
    # `$` lets exactly one thing through: a newline at the very end. Make it common.
    return text[:where] + draw(st.sampled_from(["\n"] * len(NASTY) + NASTY)) + text[where:]


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values, valid values one character off, and anything at all."""
    return st.one_of(valid, spliced(valid), nasty_text)


def taken(parser: Any, candidates: st.SearchStrategy[str], fallback: str) -> Any:
    """Values as the validator leaves them: a refused candidate becomes `fallback`."""

    def keep(text: str) -> str:
        try:
            return str(parser(text))
        except InvalidInput:
            return fallback

    return candidates.map(keep)


plain = st.text(alphabet="abc xyz-_.0", min_size=1, max_size=20)
hostnames = near(st.from_regex(HOSTNAME_PATTERN, fullmatch=True))
domains = taken(parse_domain, near(st.from_regex(DOMAIN_PATTERN, fullmatch=True)), ZONE)
comments = taken(lambda c: parse_ssh_key(f"{KEY_BODY} {c}", "k"), near(plain), KEY_BODY)
metadata_keys = near(st.from_regex(METADATA_KEY_PATTERN, fullmatch=True))
metadata = st.dictionaries(metadata_keys, near(plain), max_size=4).map(
    lambda items: {k: v for k, v in items.items() if _metadata_ok(k, v)}
)
user_data = st.one_of(st.none(), taken(parse_user_data, nasty_text, "#!/bin/sh\n"))
password_hashes = taken(
    parse_password_hash, near(st.sampled_from([SAMPLE_HASH, "!", "*", "!" + SAMPLE_HASH])), "!"
)


def _metadata_ok(key: str, value: str) -> bool:
    try:
        parse_metadata({key: value})
    except InvalidInput:
        return False
    return True


@st.composite
def guests(draw: st.DrawFn, count: int) -> list[VM]:
    vms: list[VM] = []
    for n in range(1, count + 1):
        hostname = draw(hostnames)
        try:
            parse_hostname(hostname)
        except InvalidInput:
            hostname = f"g{n}"
        if any(vm.spec.hostname == hostname.lower() for vm in vms):
            hostname = f"g{n}"  # one record per name, as the store keeps it
        body: dict[str, Any] = {
            "hostname": hostname,
            "domain": draw(st.one_of(st.none(), st.just(ZONE), domains)),
            "host": draw(st.one_of(st.none(), domains)),
            "ipv4": {"address": f"198.18.0.{n + 10}", "prefix": 24, "gateway": "198.18.0.1"},
            "dns": ["198.18.0.1"],
            "password_hash": draw(password_hashes),
            "ssh_keys": [draw(comments)] * draw(st.integers(0, 2)),
            "metadata": draw(metadata),
            "user_data": draw(user_data),
        }
        spec = parse_vm(body, mac=mac_of(n)).spec  # everything here was taken already
        state = draw(st.sampled_from([State.REGISTERED, State.CONFIGURED]))
        vms.append(VM(spec, f"6f1c0b1e-3b0a-4d7e-9a51-{n:012d}", state, {}, None, 0.0, 0.0))
    return vms


public_urls = taken(
    lambda url: _config(public_url=url).public_url,
    near(st.just("http://169.254.169.254")).map(lambda t: "http://" + t.removeprefix("http://")),
    "http://169.254.169.254",
)
bridges = taken(lambda name: _bridge(name), near(st.just("xenbr0")), "br0")


def _config(**flags: Any) -> Any:
    try:
        return build_settings(config_file=None, env={}, flags=flags)
    except ConfigError as exc:
        raise InvalidInput(exc.detail) from None


def _bridge(name: str) -> str:
    table = {"cidr": "198.18.0.0/24", "gateway": "198.18.0.1", "bridge": name}
    subnet = _config(**{"dhcp.daemon": "dnsmasq", "dhcp.subnets": [table]}).dhcp.subnets[0]
    bridge: str = subnet.bridge
    return bridge


def one_line_per_newline(text: str) -> list[str]:
    """The lines as a line-based reader sees them; no other line boundary is allowed."""
    assert text.endswith("\n"), "a whole document ends its last line"
    lines = text[:-1].split("\n")
    assert text.splitlines() == lines, "a character other than \\n broke a line"
    return lines


# --- the guest documents ----------------------------------------------------------------


def check_config_txt(vm: VM, body: bytes, url: str) -> None:
    # The guest script's own check: bytes are \n, printable ASCII, or part of UTF-8.
    assert all(b == 0x0A or 0x20 <= b <= 0x7E or b >= 0x80 for b in body)
    lines = one_line_per_newline(body.decode())
    assert lines[0] == "format 1" and lines[-1] == "end"
    pairs = [line.split(" ", 1) for line in lines[:-1]]
    assert all(len(pair) == 2 for pair in pairs), "every line is `key value`"
    keys = Counter("metadata." if k.startswith("metadata.") else k for k, _ in pairs)
    spec = vm.spec
    secrets = vm.state is not State.CONFIGURED
    expected = Counter(
        format=1, instance_id=1, hostname=1, fqdn=1, mac=1, address=1, prefix=1, gateway=1,
        dns=len(spec.dns), ssh_key=len(spec.ssh_keys), status_url=1,
        domain=1 if spec.domain or ZONE else 0,
        password_hash=1 if secrets else 0,
        user_data_url=1 if secrets and spec.user_data is not None else 0,
    )  # fmt: skip
    expected["metadata."] = len(spec.metadata)
    assert keys == +expected
    values = dict(pair for pair in pairs if pair[0] != "ssh_key")  # type: ignore[misc]
    assert values["hostname"] == spec.hostname
    assert values["status_url"] == url.rstrip("/") + "/v1/status"
    assert [v for k, v in pairs if k == "ssh_key"] == list(spec.ssh_keys)
    assert {k[9:]: v for k, v in pairs if k.startswith("metadata.")} == dict(spec.metadata)


def check_guest_documents(vm: VM, url: str) -> None:
    options = DocumentOptions(default_domain=ZONE, public_url=url)
    document = render_guest_document(vm, options)
    check_config_txt(vm, document.text_body, url)
    assert document.json_body.isascii(), "no raw U+2028 for a JavaScript reader"
    assert json.loads(document.json_body)["metadata"] == dict(vm.spec.metadata)
    view = guest_view(vm, options)
    cloud = CloudOptions()

    files = nocloud_files(view)
    assert yaml.safe_load(files["meta-data"]) == meta_data(view)
    assert yaml.safe_load(files["network-config"]) == network_config(view)
    base = yaml.safe_load(files["user-data"]) if vm.spec.user_data is None else None
    if base is not None:
        assert base.get("ssh_authorized_keys", []) == list(vm.spec.ssh_keys)

    stack = openstack_files(view, cloud)
    meta = json.loads(stack["meta_data.json"])
    assert meta["meta"] == dict(vm.spec.metadata)
    assert meta["name"] == vm.spec.hostname and meta["hostname"] == view.fqdn
    assert list(meta["public_keys"].values()) == list(vm.spec.ssh_keys)

    tree = ec2_tree(view, cloud)
    for path, content in tree.files().items():
        assert path.isascii() and "\n" not in path
        if path.startswith("meta-data/") and not path.endswith("openssh-key"):
            assert "\n" not in content.decode(), path
    for directory in ("", "meta-data", "meta-data/network/interfaces/macs"):
        listing = tree.lookup(directory)
        assert listing is not None
        one_line_per_newline(listing.decode() + "\n")
    if vm.spec.ssh_keys:
        listing = tree.lookup("meta-data/public-keys")
        assert listing is not None
        entries = one_line_per_newline(listing.decode() + "\n")
        assert [entry.split("=", 1)[0] for entry in entries] == [
            str(i) for i in range(len(vm.spec.ssh_keys))
        ]
    assert tree.lookup("meta-data/hostname") == view.fqdn.encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vms=guests(2), url=public_urls)
def test_guest_documents_hold_exactly_what_went_in(vms: list[VM], url: str) -> None:
    for vm in vms:
        check_guest_documents(vm, url)


# --- DHCP -------------------------------------------------------------------------------


def plan(url: str, bridge: str) -> DhcpPlan:
    subnet = Subnet(
        ipaddress.IPv4Network("198.18.0.0/24"),
        ipaddress.IPv4Address("198.18.0.1"),
        bridge,
        ("198.18.0.1",),
        ZONE,
        600,
    )
    return DhcpPlan((subnet,), metadata_url=url)


DNSMASQ_DIRECTIVES = ("dhcp-authoritative", "dhcp-range=", "dhcp-option=")


def check_dhcp(vms: list[VM], url: str, bridge: str) -> dict[str, dict[str, str]]:
    env = template_environment()
    out = {}
    dnsmasq = render("dnsmasq", vms, plan(url, bridge), env)
    assert dnsmasq.left_out == ()
    hosts = one_line_per_newline(dnsmasq.files["dnsmasq-hosts"])
    assert hosts == [f"{vm.mac},{vm.spec.ipv4.address},{vm.spec.hostname}" for vm in vms]
    assert all(line.count(",") == 2 for line in hosts)
    conf = one_line_per_newline(dnsmasq.files["dnsmasq.conf"])
    for line in conf:
        assert not line or line.startswith("#") or line.startswith(DNSMASQ_DIRECTIVES), line
    assert f'dhcp-option=tag:subnet0,224,"{url}"' in conf
    out["dnsmasq"] = dnsmasq.files

    kea = render("kea", vms, plan(url, bridge), env)
    config = json.loads(kea.files["kea-dhcp4.conf"])["Dhcp4"]
    (subnet,) = config["subnet4"]
    assert subnet["reservations"] == [
        {"hw-address": vm.mac, "ip-address": vm.spec.ipv4.address, "hostname": vm.spec.hostname}
        for vm in vms
    ]
    assert subnet["interface"] == bridge
    assert {o.get("name"): o["data"] for o in subnet["option-data"]}["metadata-url"] == url
    out["kea"] = kea.files

    dhcpd = render("dhcpd", vms, plan(url, bridge), env)
    lines = one_line_per_newline(dhcpd.files["dhcpd.conf"])
    blocks = [i for i, line in enumerate(lines) if line.startswith("host ")]
    assert len(blocks) == len(vms)
    for start, vm in zip(blocks, vms, strict=True):
        assert lines[start : start + 5] == [
            f"host guest-{vm.mac.replace(':', '')} {{",
            f"  hardware ethernet {vm.mac};",
            f"  fixed-address {vm.spec.ipv4.address};",
            f'  option host-name "{vm.spec.hostname}";',
            "}",
        ]
    assert sum(line.count("{") for line in lines) == sum(line.count("}") for line in lines)
    assert f'  option metadata-url "{url}";' in lines
    out["dhcpd"] = dhcpd.files
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vms=guests(3), url=public_urls, bridge=bridges)
def test_dhcp_files_hold_exactly_the_reservations(vms: list[VM], url: str, bridge: str) -> None:
    check_dhcp(vms, url, bridge)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vms=guests(40), url=public_urls, bridge=bridges)
def test_the_daemons_own_checkers_take_whatever_the_validators_took(
    tmp_path_factory: pytest.TempPathFactory, vms: list[VM], url: str, bridge: str
) -> None:
    """Not only well formed as we read it: dnsmasq --test, kea-dhcp4 -t and dhcpd -t
    accept the files (Kea's interface names are checked where Kea runs: see daemons.py)."""
    tools = need_tools("dnsmasq", "kea-dhcp4", "dhcpd")
    tmp: Path = tmp_path_factory.mktemp("checkers")
    files = check_dhcp(vms, url, bridge)
    dnsmasq = files["dnsmasq"]["dnsmasq.conf"] + "".join(
        f"dhcp-host={line}\n" for line in files["dnsmasq"]["dnsmasq-hosts"].splitlines()
    )
    (tmp / "dnsmasq.conf").write_text(dnsmasq)
    kea = json.loads(files["kea"]["kea-dhcp4.conf"])
    kea["Dhcp4"]["interfaces-config"]["interfaces"] = ["*"]
    for subnet in kea["Dhcp4"]["subnet4"]:
        subnet.pop("interface", None)
    (tmp / "kea.conf").write_text(json.dumps(kea))
    (tmp / "dhcpd.conf").write_text(files["dhcpd"]["dhcpd.conf"])
    for argv in (
        [tools["dnsmasq"], "--test", f"--conf-file={tmp}/dnsmasq.conf"],
        [tools["kea-dhcp4"], "-t", f"{tmp}/kea.conf"],
        [tools["dhcpd"], "-t", "-q", "-cf", f"{tmp}/dhcpd.conf"],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode == 0, (argv[0], result.stdout, result.stderr)


# --- DNS --------------------------------------------------------------------------------

LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vms=guests(3))
def test_dns_names_are_exactly_hostname_dot_zone(vms: list[VM]) -> None:
    dns = DnsSettings(listen=(("127.0.0.1", 0),), zone=ZONE)
    zone = Zone.build(vms, dns, ZONE, serial=1)
    for vm in vms:
        in_zone = (vm.spec.domain or ZONE) == ZONE
        fqdn = f"{vm.spec.hostname}.{ZONE}"
        assert (fqdn in zone.names) is in_zone
        if not in_zone:
            continue
        assert zone.addresses(fqdn) == (vm.spec.ipv4.address,)
        assert len(fqdn) <= 253 and all(LABEL.fullmatch(label) for label in fqdn.split("."))
        # On the wire: the same labels come back, and the answer names this guest.
        assert [label.decode() for label in DNSLabel(fqdn).label] == fqdn.split(".")
        reply = answer(DNSRecord.question(fqdn, "A").pack(), zone)
        assert isinstance(reply, Reply)
        record = DNSRecord.parse(reply.packet)
        assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in record.rr] == [
            (fqdn + ".", "A", vm.spec.ipv4.address)
        ]


def test_a_record_stored_before_the_checks_never_splits_a_line() -> None:
    """Defence in depth: a metadata key or host name with a newline already in the
    database loses its line in config.txt, and the name is not put in the zone."""
    good = parse_vm(
        {"hostname": "web", "ipv4": {"address": "198.18.0.11", "prefix": 24}}, mac=mac_of(1)
    ).spec
    attack = {"note\n": f"ssh_key {KEY_BODY} attacker", "ok": "fine"}
    spec = replace(good, hostname="web\nssh_key x", metadata=attack)
    vm = VM(spec, "6f1c0b1e-3b0a-4d7e-9a51-2f0d3c4b5a69", State.REGISTERED, {}, None, 0.0, 0.0)
    text = render_guest_document(vm, DocumentOptions(ZONE, "http://169.254.169.254")).text_body
    lines = one_line_per_newline(text.decode())
    assert not any(line.startswith("ssh_key") for line in lines)
    assert "metadata.ok fine" in lines and not any(line.startswith("hostname") for line in lines)
    zone = Zone.build([vm], DnsSettings(listen=(("127.0.0.1", 0),), zone=ZONE), ZONE, serial=1)
    assert vm.mac not in zone.guests
