"""Registry records → the files a DHCP daemon reads, through Jinja2 templates.

Every guest gets its reserved address, its hostname, the subnet's router, DNS and
domain, option 121 (a /32 route to the metadata address via the gateway, and the
default route, since clients that take 121 ignore option 3) and the metadata URL in a
private option (224). Unknown MACs get nothing. Input that no daemon should see
(a guest outside every subnet, on the gateway, network or broadcast address, a
duplicate MAC or address) is refused as a whole with every problem listed.

Pure: records, settings and a template environment in; text out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2

from metadata_server.errors import MetadataError
from metadata_server.model import VM

DAEMONS = ("dnsmasq", "kea", "dhcpd")
# The files each daemon reads, by name; each is rendered from `<name>.j2`.
DAEMON_FILES: Mapping[str, tuple[str, ...]] = {
    "dnsmasq": ("dnsmasq-hosts", "dnsmasq.conf"),
    "kea": ("kea-dhcp4.conf",),
    "dhcpd": ("dhcpd.conf",),
}
METADATA_OPTION = 224


class RenderError(MetadataError):
    """The registry cannot be turned into a DHCP configuration; nothing is written."""

    http_status = 409
    code = "dhcp_render"

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        super().__init__(f"cannot render the DHCP configuration: {shown}")
        self.problems = problems


@dataclass(frozen=True)
class Subnet:
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600


@dataclass(frozen=True)
class DhcpPlan:
    """What the templates need, beyond the records: the network side of the config."""

    subnets: tuple[Subnet, ...]
    metadata_address: str = "169.254.169.254"
    metadata_url: str = "http://169.254.169.254"
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


def plan_hosts(vms: Iterable[VM], subnets: tuple[Subnet, ...]) -> list[Host]:
    hosts: list[Host] = []
    problems: list[str] = []
    seen_macs: set[str] = set()
    seen_addresses: dict[str, str] = {}
    for vm in vms:
        address = ipaddress.IPv4Address(vm.spec.ipv4.address)
        where = f"guest {vm.mac} ({address})"
        if vm.mac in seen_macs:
            problems.append(f"{where}: MAC appears twice")
            continue
        seen_macs.add(vm.mac)
        if str(address) in seen_addresses:
            problems.append(f"{where}: address also reserved by {seen_addresses[str(address)]}")
            continue
        seen_addresses[str(address)] = vm.mac
        index = next((i for i, s in enumerate(subnets) if address in s.cidr), None)
        if index is None:
            problems.append(f"{where}: outside every configured subnet")
            continue
        subnet = subnets[index]
        if address == subnet.gateway:
            problems.append(f"{where}: is the gateway of {subnet.cidr}")
        elif subnet.cidr.prefixlen <= 30 and address in (
            subnet.cidr.network_address,
            subnet.cidr.broadcast_address,
        ):
            problems.append(f"{where}: is the network or broadcast address of {subnet.cidr}")
        else:
            hosts.append(Host(vm.mac, str(address), vm.spec.hostname, index))
    if problems:
        raise RenderError(problems)
    return hosts


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
) -> dict[str, str]:
    """The daemon's files, name → text. Raises RenderError (input) or jinja2 errors
    (a broken template: StrictUndefined makes a missing variable an error, not a blank)."""
    if daemon not in DAEMON_FILES:
        raise ValueError(f"unknown DHCP daemon {daemon!r}")
    hosts = plan_hosts(vms, plan.subnets)
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
    return {
        name: templates.get_template(f"{name}.j2").render(context) for name in DAEMON_FILES[daemon]
    }
