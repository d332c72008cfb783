"""The registry's uniqueness rules as values: MAC, IPv4 address, hostname+domain.

Backends find who holds a field in their own way; this module words the resulting
`Conflict` the same way for every backend, and checks a whole bulk import in memory
(against the records outside it and against its own earlier rows) so a backend needs
one query, not one per row. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from metadata_server.errors import Conflict, RowError
from metadata_server.model import VM
from metadata_server.store.records import name_key


def mac_taken(vm: VM) -> Conflict:
    return Conflict(f"{vm.mac} is already registered", field="mac", holder=vm.mac)


def address_taken(vm: VM, holder: str) -> Conflict:
    return Conflict(
        f"{vm.spec.ipv4.address} is already reserved by {holder}",
        field="ipv4.address",
        holder=holder,
    )


def name_taken(vm: VM, holder: str) -> Conflict:
    return Conflict(
        f"host name {vm.spec.hostname} (domain {vm.spec.domain or 'default'}) "
        f"is already used by {holder}",
        field="hostname",
        holder=holder,
    )


def import_errors(vms: Sequence[VM], others: Iterable[tuple[str, str, str]]) -> list[RowError]:
    """Every row of an import that clashes, in row order.

    `others` are (mac, ipv4, name_key) of the stored records whose MAC is not in the
    import (rows replace records with the same MAC, so two rows may swap addresses).
    A row that clashes is not counted as holding its fields, as if it were not written.
    """
    by_address: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for mac, address, name in others:
        by_address[address] = mac
        by_name[name] = mac
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for index, vm in enumerate(vms):
        if vm.mac in seen:
            errors.append(RowError(index, "mac", f"{vm.mac} is also row {seen[vm.mac]}"))
            continue
        seen[vm.mac] = index
        holder = by_address.get(vm.spec.ipv4.address)
        clash = address_taken(vm, holder) if holder else None
        if clash is None:
            holder = by_name.get(name_key(vm))
            clash = name_taken(vm, holder) if holder else None
        if clash is not None:
            errors.append(RowError(index, clash.field, clash.detail))
            continue
        by_address[vm.spec.ipv4.address] = vm.mac
        by_name[name_key(vm)] = vm.mac
    return errors
