"""The DNS view of the registry: a frozen Zone of names, addresses and reverse names.

`Zone.build(vms, settings, default_domain, serial)` takes the guests whose effective
domain (their own, else the server's default) is the zone; `zone.with_changes(changes)`
returns the next Zone for a batch of the store's change events, or the same Zone when
nothing it holds changed. Names are lower case, without the trailing dot.

Pure: plain strings only, no dnslib, no I/O, no clock (the serial comes in as a value).
A Zone is never mutated after it is built; a reader holding one sees one consistent view.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from metadata_server.dns.settings import DnsSettings
from metadata_server.model import VM, is_label
from metadata_server.store.base import Change, ChangeEvent

MAX_NAME_LENGTH = 253
SERIAL_MODULUS = 1 << 32

# SOA timers; nothing transfers this zone, so they only need to be sane.
REFRESH = 3600
RETRY = 600
EXPIRE = 86400

Entry = tuple[str, str]  # (fqdn, IPv4 address) of one guest in the zone


def reverse_name(address: str) -> str:
    """`198.18.0.11` → `11.0.18.198.in-addr.arpa`."""
    return ipaddress.IPv4Address(address).reverse_pointer


def _address_key(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a Zone is a snapshot
class Zone:
    origin: str
    metadata_fqdn: str
    metadata_address: str
    hostmaster: str
    ttl: int
    serial: int
    forwarding: bool
    default_domain: str | None
    guests: Mapping[str, Entry]  # MAC → entry, only guests that are in the zone
    names: Mapping[str, tuple[str, ...]]  # fqdn → IPv4 addresses, sorted
    pointers: Mapping[str, str]  # reverse name → fqdn
    empty: frozenset[str]  # empty non-terminals (ancestors of a multi-label metadata name)

    @classmethod
    def build(
        cls,
        vms: Iterable[VM],
        settings: DnsSettings,
        default_domain: str | None,
        serial: int,
    ) -> Zone:
        origin = settings.zone
        metadata_fqdn = settings.metadata_fqdn
        empty: set[str] = set()
        parent = metadata_fqdn.partition(".")[2]
        while parent != origin:
            empty.add(parent)
            parent = parent.partition(".")[2]
        zone = cls(
            origin=origin,
            metadata_fqdn=metadata_fqdn,
            metadata_address=settings.metadata_address,
            hostmaster=f"hostmaster.{origin}",
            ttl=settings.ttl,
            serial=serial % SERIAL_MODULUS,
            forwarding=bool(settings.upstreams),
            default_domain=default_domain.lower() if default_domain else None,
            guests={},
            names={metadata_fqdn: (settings.metadata_address,)},
            pointers={reverse_name(settings.metadata_address): metadata_fqdn},
            empty=frozenset(empty),
        )
        changes = [Change(ChangeEvent.CREATED, vm.mac, vm) for vm in vms]
        return replace(zone.with_changes(changes), serial=serial % SERIAL_MODULUS)

    def entry(self, vm: VM) -> Entry | None:
        """The guest's (fqdn, address) when it belongs in this zone, else None.

        A guest named like the metadata name, or holding the metadata address, is left
        out: the metadata service's own name and address must never point at a guest. So
        is a record whose host name is not one RFC 1123 label (stored before that check
        was strict): no name the zone answers holds anything else.
        """
        domain = (vm.spec.domain or self.default_domain or "").lower()
        if domain != self.origin or not is_label(vm.spec.hostname):
            return None
        fqdn = f"{vm.spec.hostname.lower()}.{domain}"
        address = vm.spec.ipv4.address
        if (
            fqdn == self.metadata_fqdn
            or address == self.metadata_address
            or len(fqdn) > MAX_NAME_LENGTH
        ):
            return None
        return (fqdn, address)

    def with_changes(self, changes: Sequence[Change]) -> Zone:
        """The Zone after a committed batch; `self` when no name or address moved."""
        latest: dict[str, Entry | None] = {}
        for change in changes:
            latest[change.mac] = self.entry(change.vm) if change.vm is not None else None
        moved = {mac: new for mac, new in latest.items() if self.guests.get(mac) != new}
        if not moved:
            return self
        guests = dict(self.guests)
        names = dict(self.names)
        pointers = dict(self.pointers)
        # Every old entry goes before any new one comes: one batch may swap addresses.
        for mac in moved:
            old = guests.pop(mac, None)
            if old is None:
                continue
            fqdn, address = old
            rest = tuple(a for a in names.get(fqdn, ()) if a != address)
            if rest:
                names[fqdn] = rest
            else:
                names.pop(fqdn, None)
            pointer = reverse_name(address)
            if pointers.get(pointer) == fqdn:
                del pointers[pointer]
        for mac, new in moved.items():
            if new is None:
                continue
            fqdn, address = new
            guests[mac] = new
            # Two records may share a name when one leaves its domain to the default
            # and the other spells it out; both addresses are answered, in order.
            names[fqdn] = tuple(sorted({*names.get(fqdn, ()), address}, key=_address_key))
            pointers[reverse_name(address)] = fqdn
        return replace(
            self,
            guests=guests,
            names=names,
            pointers=pointers,
            serial=(self.serial + 1) % SERIAL_MODULUS,
        )

    # --- lookups (names in lower case, no trailing dot) -----------------------------

    def contains(self, name: str) -> bool:
        """Whether `name` is the zone's apex or below it."""
        return name == self.origin or name.endswith("." + self.origin)

    def addresses(self, name: str) -> tuple[str, ...]:
        return self.names.get(name, ())

    def pointer(self, name: str) -> str | None:
        """The fqdn a reverse name points to, for guests (and the metadata address)."""
        return self.pointers.get(name)

    def exists(self, name: str) -> bool:
        """Whether an in-zone name has records or names below it (NODATA, not NXDOMAIN)."""
        return name == self.origin or name in self.names or name in self.empty
