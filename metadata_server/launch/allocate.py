"""A launched guest's MAC and IPv4 address, chosen from what is taken. Pure: the taken
values and the random bytes come in as arguments.

MAC: Xen's OUI 00:16:3e and three random bytes, not held by any registered guest nor by
any running vif on this Dom0 (a domain someone started by hand keeps its MAC).

Address: the one the admin asked for, which must be a host address of a configured DHCP
subnet, or else the lowest free host address of the first subnet. Never the subnet's
network or broadcast address, its gateway, an address of Dom0 (the metadata address,
the DNS responder's, the gateways) or an address a guest reserves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Sequence

from metadata_server.dhcp.subnets import Subnet
from metadata_server.errors import Conflict, InvalidInput
from metadata_server.launch.errors import NoFreeAddress

XEN_OUI = "00:16:3e"
MAC_TRIES = 64  # draws before giving up: 2^24 MACs, so only a near-full OUI gets there


def new_mac(taken: Collection[str], random_bytes: Callable[[int], bytes]) -> str:
    """A MAC in Xen's OUI that is not in `taken` (lower-case, colon-separated)."""
    for _ in range(MAC_TRIES):
        tail = random_bytes(3)
        mac = XEN_OUI + "".join(f":{byte:02x}" for byte in tail)
        if mac not in taken:
            return mac
    raise NoFreeAddress(f"no free MAC in Xen's OUI {XEN_OUI} after {MAC_TRIES} draws")


def unusable(subnet: Subnet, dom0: Collection[str]) -> set[ipaddress.IPv4Address]:
    """The addresses of `subnet` no guest may have, whoever holds them."""
    cidr = subnet.cidr
    bad = {subnet.gateway}
    if cidr.prefixlen <= 30:
        bad |= {cidr.network_address, cidr.broadcast_address}
    bad |= {ipaddress.IPv4Address(a) for a in dom0 if ipaddress.IPv4Address(a) in cidr}
    return bad


def subnet_of(address: ipaddress.IPv4Address, subnets: Sequence[Subnet]) -> Subnet:
    """The configured subnet that holds `address`; InvalidInput when none does."""
    for subnet in subnets:
        if address in subnet.cidr:
            return subnet
    if not subnets:
        raise InvalidInput(
            "no DHCP subnet is configured ([[dhcp.subnets]]): a launched guest needs one",
            field="ip",
        )
    names = ", ".join(str(subnet.cidr) for subnet in subnets)
    raise InvalidInput(f"{address} is outside every configured DHCP subnet ({names})", field="ip")


def parse_requested(text: str, subnets: Sequence[Subnet]) -> tuple[ipaddress.IPv4Address, Subnet]:
    """`ADDRESS` or `ADDRESS/PREFIX` (the prefix must be its subnet's) → address, subnet."""
    address_text, slash, prefix_text = text.partition("/")
    try:
        address = ipaddress.IPv4Address(address_text)
    except ValueError:
        raise InvalidInput(
            f"ip must be ADDRESS or ADDRESS/PREFIX, like 198.18.0.10/24, not {text[:40]!r}",
            field="ip",
        ) from None
    subnet = subnet_of(address, subnets)
    if slash and prefix_text != str(subnet.cidr.prefixlen):
        raise InvalidInput(
            f"ip {text[:40]}: {address} is in the subnet {subnet.cidr}, whose prefix is "
            f"/{subnet.cidr.prefixlen}",
            field="ip",
        )
    return address, subnet


def check_address(
    address: ipaddress.IPv4Address,
    subnet: Subnet,
    *,
    reserved: dict[str, str],
    dom0: Collection[str],
) -> None:
    """Refuse an address the guest cannot have: InvalidInput for the subnet's own and
    Dom0's, Conflict (naming the holder) for one a guest reserves. `reserved` maps
    address → MAC."""
    if address in unusable(subnet, dom0):
        raise InvalidInput(
            f"{address} is the network, broadcast or gateway address of {subnet.cidr}, "
            "or one of Dom0's",
            field="ip",
        )
    holder = reserved.get(str(address))
    if holder is not None:
        raise Conflict(f"{address} is already reserved by {holder}", field="ip", holder=holder)


def next_free_address(
    subnet: Subnet, *, reserved: Collection[str], dom0: Collection[str]
) -> ipaddress.IPv4Address:
    """The lowest host address of `subnet` that is neither unusable nor reserved."""
    bad = unusable(subnet, dom0)
    cidr = subnet.cidr
    first, last = int(cidr.network_address), int(cidr.broadcast_address)
    for number in range(first, last + 1):
        address = ipaddress.IPv4Address(number)
        if address not in bad and str(address) not in reserved:
            return address
    raise NoFreeAddress(
        f"every address of {cidr} is taken (reserved by guests, the gateway or Dom0's): "
        "give another subnet's address with ip, or free one"
    )
