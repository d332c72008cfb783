"""Registry records → the files a DHCP daemon reads, through Jinja2 templates.

Every guest gets its reserved address, its hostname, the subnet's router, DNS and
domain, option 121 (a /32 route to the metadata address via the gateway, and the
default route, since clients that take 121 ignore option 3) and the metadata URL in a
private option (224). Unknown MACs get nothing. A guest no daemon should see (outside
every subnet, on the gateway, network or broadcast address, a duplicate MAC or address,
a stored field that today's validators refuse) is left out, with the reason, and every
other guest is written: one bad record never holds back the rest.

Pure: records, settings and a template environment in; text out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from metadata_server.dhcp.subnets import Subnet
from metadata_server.model import LABEL_PATTERN, METADATA_ADDRESS, METADATA_URL, VM

DAEMONS = ("dnsmasq", "kea", "dhcpd")
# The files each daemon reads, by name; each is rendered from `<name>.j2`.
DAEMON_FILES: Mapping[str, tuple[str, ...]] = {
    "dnsmasq": ("dnsmasq-hosts", "dnsmasq.conf"),
    "kea": ("kea-dhcp4.conf",),
    "dhcpd": ("dhcpd.conf",),
}
METADATA_OPTION = 224


@dataclass(frozen=True)
class DhcpPlan:
    """What the templates need, beyond the records: the network side of the config."""

    subnets: tuple[Subnet, ...]
    metadata_address: str = str(METADATA_ADDRESS)
    metadata_url: str = METADATA_URL
    # Kea-only paths, put into its JSON by the template.
    kea_control_socket: str = "/run/kea/kea4-ctrl-socket"
    kea_lease_file: str = "/var/lib/kea/kea-leases4.csv"
    kea_interfaces: tuple[str, ...] = ()
    kea_hooks_library: str | None = None
    lease_hook: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Host:
    mac: str
    address: str
    hostname: str
    subnet: int

    @property
    def name(self) -> str:
        return "guest-" + self.mac.replace(":", "")


def _route_bytes(metadata_address: str, gateway: ipaddress.IPv4Address) -> list[int]:
    """Option 121 as RFC 3442 bytes: the /32 to the metadata address, then the default."""
    gw = list(gateway.packed)
    return [32, *ipaddress.IPv4Address(metadata_address).packed, *gw, 0, *gw]


@dataclass(frozen=True)
class LeftOut:
    """A guest whose reservation is not in the files, and why: one bad record (one that
    predates a check, or a subnet taken out of the configuration) must not keep every
    other guest's change from the daemon."""

    mac: str
    address: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"mac": self.mac, "address": self.address, "reason": self.reason}


@dataclass(frozen=True)
class Rendered:
    files: dict[str, str]  # name → text
    hosts: int  # reservations written
    left_out: tuple[LeftOut, ...]


# What a stored MAC and host name look like after the model normalised them; the
# templates write both unquoted.
_NORMAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_NORMAL_HOSTNAME = re.compile(LABEL_PATTERN.replace("A-Za-z", "a-z"))


def _record_problem(vm: VM) -> str | None:
    """What keeps a stored record out of a daemon's file although the store took it
    (before a check existed): a field the templates write must still be in normal form."""
    if not _NORMAL_MAC.fullmatch(vm.mac):
        return "its MAC is not six lower-case hex pairs separated by ':'"
    if not _NORMAL_HOSTNAME.fullmatch(vm.spec.hostname):
        return "its host name is not one lower-case RFC 1123 label"
    return None


def _subnet_problem(address: ipaddress.IPv4Address, subnet: Subnet) -> str | None:
    if address == subnet.gateway:
        return f"its address is the gateway of {subnet.cidr}"
    if subnet.cidr.prefixlen <= 30 and address in (
        subnet.cidr.network_address,
        subnet.cidr.broadcast_address,
    ):
        return f"its address is the network or broadcast address of {subnet.cidr}"
    return None


def plan_hosts(vms: Iterable[VM], subnets: tuple[Subnet, ...]) -> tuple[list[Host], list[LeftOut]]:
    """The reservations to write, and the guests left out with the reason for each."""
    hosts: list[Host] = []
    left_out: list[LeftOut] = []
    seen_macs: set[str] = set()
    seen_addresses: dict[str, str] = {}
    for vm in vms:
        text = vm.spec.ipv4.address
        reason = _record_problem(vm)
        index: int | None = None
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            reason = reason or "its address is not an IPv4 address"
        if reason is None and vm.mac in seen_macs:
            reason = "its MAC appears twice"
        elif reason is None and text in seen_addresses:
            reason = f"its address is also reserved by {seen_addresses[text]}"
        if reason is None:
            seen_macs.add(vm.mac)
            seen_addresses[text] = vm.mac
            index = next((i for i, s in enumerate(subnets) if address in s.cidr), None)
            if index is None:
                reason = "outside every configured subnet"
            else:
                reason = _subnet_problem(address, subnets[index])
        if reason is not None or index is None:
            left_out.append(LeftOut(vm.mac, text, reason or "outside every configured subnet"))
        else:
            hosts.append(Host(vm.mac, text, vm.spec.hostname, index))
    return hosts, left_out


def _subnet_context(
    index: int, subnet: Subnet, plan: DhcpPlan, hosts: list[Host]
) -> dict[str, Any]:
    routes = _route_bytes(plan.metadata_address, subnet.gateway)
    return {
        "tag": f"subnet{index}",
        "cidr": str(subnet.cidr),
        "network": str(subnet.cidr.network_address),
        "netmask": str(subnet.cidr.netmask),
        "gateway": str(subnet.gateway),
        "bridge": subnet.bridge,
        "dns": list(subnet.dns),
        "domain": subnet.domain,
        "lease_time": subnet.lease_time,
        "routes_bytes": routes,
        "routes_hex": "".join(f"{byte:02X}" for byte in routes),
        "hosts": [host for host in hosts if host.subnet == index],
    }


def render(
    daemon: str, vms: Iterable[VM], plan: DhcpPlan, templates: jinja2.Environment
) -> Rendered:
    """The daemon's files, with every guest that can be reserved; the others are listed
    in `left_out`. Raises jinja2 errors for a broken template (StrictUndefined makes a
    missing variable an error, not a blank)."""
    if daemon not in DAEMON_FILES:
        raise ValueError(f"unknown DHCP daemon {daemon!r}")
    hosts, left_out = plan_hosts(vms, plan.subnets)
    context: dict[str, Any] = {
        "hosts": hosts,
        "subnets": [
            _subnet_context(i, subnet, plan, hosts) for i, subnet in enumerate(plan.subnets)
        ],
        "metadata_address": plan.metadata_address,
        "metadata_url": plan.metadata_url,
        "metadata_option": METADATA_OPTION,
        "control_socket": plan.kea_control_socket,
        "lease_file": plan.kea_lease_file,
        "interfaces": list(plan.kea_interfaces)
        or sorted({s.bridge for s in plan.subnets if s.bridge}),
        "hooks_library": plan.kea_hooks_library,
        "lease_hook": plan.lease_hook,
        **plan.extra,
    }
    files = {
        name: templates.get_template(f"{name}.j2").render(context) for name in DAEMON_FILES[daemon]
    }
    return Rendered(files, len(hosts), tuple(left_out))
