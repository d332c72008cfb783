"""The Zone: which guests are in it, and how each batch of registry changes moves it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metadata_server.dns.zone import Zone
from metadata_server.model import VM, State
from metadata_server.store.base import Change
from tests.dns.support import ZONE, dns_settings, make_vm

SETTINGS = dns_settings()


def build(*vms: VM, default_domain: str | None = ZONE) -> Zone:
    return Zone.build(vms, SETTINGS, default_domain, serial=100)


def created(vm: VM) -> Change:
    return Change("created", vm.mac, vm)


def updated(vm: VM) -> Change:
    return Change("updated", vm.mac, vm)


MEMBERSHIP = {
    "no-domain-uses-default": (make_vm(1), ZONE, True),
    "no-domain-no-default": (make_vm(1), None, False),
    "explicit-zone": (make_vm(1, domain=ZONE), None, True),
    "explicit-zone-upper-case-default": (make_vm(1), "Guests.Internal", True),
    "other-domain": (make_vm(1, domain="other.example"), ZONE, False),
    "subdomain-of-zone": (make_vm(1, domain=f"lab.{ZONE}"), ZONE, False),
    "named-like-metadata": (make_vm(1, hostname="metadata"), ZONE, False),
}


@pytest.mark.parametrize(
    ("vm", "default_domain", "member"), MEMBERSHIP.values(), ids=MEMBERSHIP.keys()
)
def test_membership(vm: VM, default_domain: str | None, member: bool) -> None:
    zone = build(vm, default_domain=default_domain)
    assert (vm.mac in zone.guests) is member
    fqdn = f"{vm.spec.hostname}.{ZONE}"
    if member:
        assert zone.addresses(fqdn) == (vm.spec.ipv4.address,)
        assert zone.pointer("3.0.18.198.in-addr.arpa") == fqdn
    else:
        assert zone.pointer("3.0.18.198.in-addr.arpa") is None
    # The metadata name always answers the metadata address, never a guest's.
    assert zone.addresses(f"metadata.{ZONE}") == ("169.254.169.254",)


def test_rename_moves_name_and_pointer() -> None:
    vm = make_vm(1)
    zone = build(vm)
    renamed = replace(vm, spec=replace(vm.spec, hostname="web"))
    after = zone.with_changes([updated(renamed)])
    assert after.addresses(f"guest1.{ZONE}") == ()
    assert after.addresses(f"web.{ZONE}") == ("198.18.0.3",)
    assert after.pointer("3.0.18.198.in-addr.arpa") == f"web.{ZONE}"
    assert after.serial == zone.serial + 1
    assert zone.addresses(f"guest1.{ZONE}") == ("198.18.0.3",)  # the old Zone is untouched


def test_readdress_moves_pointer() -> None:
    vm = make_vm(1)
    zone = build(vm)
    moved = replace(vm, spec=replace(vm.spec, ipv4=replace(vm.spec.ipv4, address="198.18.7.7")))
    after = zone.with_changes([updated(moved)])
    assert after.addresses(f"guest1.{ZONE}") == ("198.18.7.7",)
    assert after.pointer("3.0.18.198.in-addr.arpa") is None
    assert after.pointer("7.7.18.198.in-addr.arpa") == f"guest1.{ZONE}"


def test_delete_and_leaving_the_domain() -> None:
    one, two = make_vm(1), make_vm(2)
    zone = build(one, two)
    after = zone.with_changes(
        [
            Change("deleted", one.mac, None),
            updated(replace(two, spec=replace(two.spec, domain="x.y"))),
        ]
    )
    assert after.guests == {}
    assert not after.exists(f"guest1.{ZONE}")
    assert after.pointer("4.0.18.198.in-addr.arpa") is None


def test_state_changes_give_the_same_zone() -> None:
    vm = make_vm(1)
    zone = build(vm)
    assert (
        zone.with_changes([Change("state", vm.mac, vm.with_state(State.LEASED, 5.0, None))]) is zone
    )
    assert zone.with_changes([]) is zone


def test_one_batch_can_swap_addresses() -> None:
    one, two = make_vm(1), make_vm(2)
    zone = build(one, two)
    a, b = one.spec.ipv4, two.spec.ipv4
    after = zone.with_changes(
        [
            updated(replace(one, spec=replace(one.spec, ipv4=b))),
            updated(replace(two, spec=replace(two.spec, ipv4=a))),
        ]
    )
    assert after.addresses(f"guest1.{ZONE}") == (b.address,)
    assert after.addresses(f"guest2.{ZONE}") == (a.address,)
    assert after.pointer("3.0.18.198.in-addr.arpa") == f"guest2.{ZONE}"
    assert after.pointer("4.0.18.198.in-addr.arpa") == f"guest1.{ZONE}"


def test_last_change_of_a_batch_wins() -> None:
    vm = make_vm(1)
    zone = build()
    after = zone.with_changes([created(vm), Change("deleted", vm.mac, None)])
    assert after is zone


def test_default_and_explicit_domain_may_share_a_name() -> None:
    # The registry keys names by the domain as written, so these two do not clash there.
    implicit = make_vm(1, hostname="web")
    explicit = make_vm(9, hostname="web", domain=ZONE)
    zone = build(implicit, explicit)
    assert zone.addresses(f"web.{ZONE}") == ("198.18.0.3", "198.18.0.11")
    after = zone.with_changes([Change("deleted", implicit.mac, None)])
    assert after.addresses(f"web.{ZONE}") == ("198.18.0.11",)
    assert after.pointer("11.0.18.198.in-addr.arpa") == f"web.{ZONE}"


def test_multi_label_metadata_name_has_empty_non_terminals() -> None:
    zone = Zone.build([], dns_settings(metadata_name="meta.svc"), ZONE, serial=1)
    assert zone.addresses(f"meta.svc.{ZONE}") == ("169.254.169.254",)
    assert zone.exists(f"svc.{ZONE}")
    assert zone.addresses(f"svc.{ZONE}") == ()


def test_serial_wraps_at_32_bits() -> None:
    zone = Zone.build([], SETTINGS, ZONE, serial=(1 << 32) - 1)
    assert zone.with_changes([created(make_vm(1))]).serial == 0
