"""MAC and address allocation for launched guests: Xen's OUI, unique among registered
guests and running vifs; the next free address skipping what no guest may have; clear
errors for an address outside every subnet and for a full subnet."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from metadata_server.errors import Conflict, InvalidInput, MetadataError
from metadata_server.launch import allocate
from metadata_server.launch.errors import NoFreeAddress
from tests.launch.conftest import SUBNET

DOM0 = {"169.254.169.254", "198.18.0.1", "198.18.0.2"}


def draws(*tails: bytes) -> Callable[[int], bytes]:
    queue = list(tails)
    return lambda n: queue.pop(0)


def test_a_mac_is_in_xens_oui_and_not_taken() -> None:
    taken = {"00:16:3e:00:00:01", "00:16:3e:00:00:02"}
    mac = allocate.new_mac(taken, draws(b"\0\0\1", b"\0\0\2", b"\xab\xcd\xef"))
    assert mac == "00:16:3e:ab:cd:ef"


def test_no_mac_after_every_draw_was_taken() -> None:
    with pytest.raises(NoFreeAddress, match="no free MAC"):
        allocate.new_mac({"00:16:3e:00:00:01"}, lambda n: b"\0\0\1")


@pytest.mark.parametrize(
    ("reserved", "expected"),
    [
        pytest.param(set(), "198.18.0.3", id="after-gateway-and-dom0"),
        pytest.param({"198.18.0.3", "198.18.0.4"}, "198.18.0.5", id="skips-reserved"),
        pytest.param({"198.18.0.3", "198.18.0.5"}, "198.18.0.4", id="fills-a-hole"),
    ],
)
def test_the_next_free_address(reserved: set[str], expected: str) -> None:
    found = allocate.next_free_address(SUBNET, reserved=reserved, dom0=DOM0)
    assert str(found) == expected


def test_a_full_subnet_is_a_clear_error() -> None:
    reserved = {f"198.18.0.{n}" for n in range(3, 7)}  # .7 is the broadcast address
    with pytest.raises(NoFreeAddress, match=r"every address of 198\.18\.0\.0/29 is taken"):
        allocate.next_free_address(SUBNET, reserved=reserved, dom0=DOM0)


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        pytest.param(
            "10.0.0.5", InvalidInput, "outside every configured DHCP subnet", id="outside"
        ),
        pytest.param("198.18.0.5/24", InvalidInput, "whose prefix is /29", id="wrong-prefix"),
        pytest.param("web", InvalidInput, "ADDRESS or ADDRESS/PREFIX", id="not-an-address"),
        pytest.param("198.18.0.1", InvalidInput, "gateway", id="gateway"),
        pytest.param("198.18.0.2", InvalidInput, "Dom0", id="dom0"),
        pytest.param("198.18.0.7/29", InvalidInput, "broadcast", id="broadcast"),
        pytest.param("198.18.0.4", Conflict, "reserved by 00:16:3e:00:00:04", id="reserved"),
    ],
)
def test_a_requested_address_that_cannot_be(
    text: str, error: type[MetadataError], match: str
) -> None:
    def check() -> None:
        address, subnet = allocate.parse_requested(text, (SUBNET,))
        allocate.check_address(
            address, subnet, reserved={"198.18.0.4": "00:16:3e:00:00:04"}, dom0=DOM0
        )

    with pytest.raises(error, match=match) as caught:
        check()
    assert caught.value.field == "ip"


def test_a_requested_address_that_is_free() -> None:
    address, subnet = allocate.parse_requested("198.18.0.6/29", (SUBNET,))
    allocate.check_address(address, subnet, reserved={}, dom0=DOM0)
    assert (address, subnet) == (ipaddress.IPv4Address("198.18.0.6"), SUBNET)
