"""The registry service: what each admin and guest action means for the stored records.

It owns the rules the store must not know: generate a password when none was given,
hash plain passwords at once, keep the stored hash on a replace that gives none, a new
instance id on re-arm, which state changes a guest may report. Clock, randomness and
the store are injected, so tests can pin them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from metadata_server.errors import (
    InvalidInput,
    InvalidRows,
    MetadataError,
    NotFound,
    RowError,
    Unavailable,
)
from metadata_server.guest_locks import GuestLocks
from metadata_server.model import (
    STRICT_ADDRESSES,
    VM,
    AddressRules,
    Launch,
    State,
    VMInput,
    VMSpec,
    is_valid_instance_id,
    iso_time,
    merge_patch,
    parse_mac,
    parse_vm,
    spec_to_json,
)
from metadata_server.passwords import DEFAULT_ROUNDS, generate_password, hash_password, make_salt
from metadata_server.store.base import Change, ChangeEvent, ChangeListener, Store
from metadata_server.waiting import KeyedWaiters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PutResult:
    vm: VM
    created: bool
    generated_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    generated_passwords: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(eq=False)  # each wait is its own, however alike
class _Watch:
    """One `Registry.wait`: the newest record of its guest it has heard of."""

    record: VM | None = None
    heard: bool = False  # a change arrived since the wait began


class Registry:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        random_bytes: Callable[[int], bytes],
        password_rounds: int = DEFAULT_ROUNDS,
        default_domain: str | None = None,
        address_rules: AddressRules = STRICT_ADDRESSES,
    ) -> None:
        self.store = store
        # Which guest addresses this server takes (loopback, its DHCP subnets): a value
        # from the settings, so every door (PUT, PATCH, import) applies the same rules.
        self.address_rules = address_rules
        self._default_domain = default_domain
        self._clock = clock
        self._random = random_bytes
        self._rounds = password_rounds
        # Read-modify-write sequences (PATCH, state reports) on one guest must not
        # interleave; a bulk import holds every guest.
        self._locks = GuestLocks()
        self._waiters = KeyedWaiters()
        self._watched: dict[str, list[_Watch]] = {}  # MAC → the waits on it
        store.subscribe(self._follow)

    # --- helpers --------------------------------------------------------------------

    def _new_instance_id(self) -> str:
        while True:
            candidate = str(uuid.UUID(bytes=self._random(16), version=4))
            if is_valid_instance_id(candidate):
                return candidate

    def _hash(self, plain: str) -> str:
        return hash_password(plain, salt=make_salt(self._random(16)), rounds=self._rounds)

    def _secured(self, parsed: VMInput, previous: VM | None) -> tuple[VMSpec, str | None]:
        """The spec with a hash in place of any plain password; a new password if needed.
        Hashing takes milliseconds of CPU: callers run this on a worker thread.

        A domain equal to the server's default is stored as "the default" (None), so
        `web` and `web.<default>` are one name and cannot both be registered.
        """
        spec = parsed.spec
        if spec.domain is not None and spec.domain == self._default_domain:
            spec = replace(spec, domain=None)
        if parsed.password is not None:
            return replace(spec, password_hash=self._hash(parsed.password)), None
        if spec.password_hash is not None:
            return spec, None
        if previous is not None and previous.spec.password_hash is not None:
            return replace(spec, password_hash=previous.spec.password_hash), None
        generated = generate_password(self._random(64))
        return replace(spec, password_hash=self._hash(generated)), generated

    async def _secure(self, parsed: VMInput, previous: VM | None) -> tuple[VMSpec, str | None]:
        return await asyncio.to_thread(self._secured, parsed, previous)

    def _new_vm(self, spec: VMSpec) -> VM:
        now = self._clock()
        return VM(
            spec=spec,
            instance_id=self._new_instance_id(),
            state=State.REGISTERED,
            state_times={State.REGISTERED.value: now},
            message=None,
            created_at=now,
            updated_at=now,
        )

    # --- admin actions --------------------------------------------------------------

    async def get(self, mac: str) -> VM:
        the_mac = parse_mac(mac)
        vm = await self.store.get(the_mac)
        if vm is None:
            raise NotFound(f"no guest with MAC {the_mac}", field="mac")
        return vm

    async def list(self, *, state: str | None = None, host: str | None = None) -> list[VM]:
        wanted: State | None = None
        if state is not None:
            try:
                wanted = State(state)
            except ValueError:
                names = ", ".join(s.value for s in State)
                raise InvalidInput(f"state must be one of {names}", field="state") from None
        return await self.store.list(state=wanted, host=host)

    async def put(self, mac: str, body: object) -> PutResult:
        parsed = parse_vm(body, mac=mac, rules=self.address_rules)
        async with self._locks.guest(parsed.spec.mac):
            previous = await self.store.get(parsed.spec.mac)
            spec, generated = await self._secure(parsed, previous)
            if previous is None:
                vm = self._new_vm(spec)
                await self.store.create(vm)
                return PutResult(vm, created=True, generated_password=generated)
            vm = replace(previous, spec=spec, updated_at=self._clock())
            await self.store.replace(vm)
            return PutResult(vm, created=False)

    async def create(self, body: object, *, launch: Launch | None = None) -> PutResult:
        """A new guest from `body` (which names its MAC), never a replacement: Conflict
        when its MAC, address or name is taken. `launch` is what `vm launch` made for it."""
        parsed = parse_vm(body, rules=self.address_rules)
        async with self._locks.guest(parsed.spec.mac):
            spec, generated = await self._secure(parsed, None)
            vm = replace(self._new_vm(spec), launch=launch)
            await self.store.create(vm)
            return PutResult(vm, created=True, generated_password=generated)

    async def set_launch(self, mac: str, launch: Launch | None) -> VM:
        """Record (or forget) what `vm launch` made for the guest."""
        async with self._locks.guest(parse_mac(mac)):
            previous = await self.get(mac)
            vm = replace(previous, launch=launch, updated_at=self._clock())
            await self.store.replace(vm)
            return vm

    async def patch(self, mac: str, body: object) -> VM:
        async with self._locks.guest(parse_mac(mac)):
            previous = await self.get(mac)
            merged = merge_patch(spec_to_json(previous.spec, secrets=True), body)
            parsed = parse_vm(merged, mac=previous.mac, rules=self.address_rules)
            spec, _ = await self._secure(parsed, previous)
            vm = replace(previous, spec=spec, updated_at=self._clock())
            await self.store.replace(vm)
            return vm

    async def delete(self, mac: str) -> None:
        the_mac = parse_mac(mac)
        if not await self.store.delete(the_mac):
            raise NotFound(f"no guest with MAC {the_mac}", field="mac")

    async def import_rows(self, rows: Sequence[object]) -> ImportResult:
        """Validate every row first; store all of them in one transaction or none.

        The work per row (validation, hashing, building the records) runs on a worker
        thread: for 50,000 rows it takes seconds, and guests must be answered meanwhile.
        """
        parsed = await asyncio.to_thread(_parse_rows, rows, self.address_rules)
        async with self._locks.every_guest():
            existing = {vm.mac: vm for vm in await self.store.list()}
            vms, generated = await asyncio.to_thread(self._import_records, parsed, existing)
            await self.store.import_all(vms)
        created = sum(1 for vm in vms if vm.mac not in existing)
        return ImportResult(
            created=created, updated=len(vms) - created, generated_passwords=generated
        )

    def _import_records(
        self, parsed: Sequence[VMInput], existing: Mapping[str, VM]
    ) -> tuple[Sequence[VM], dict[str, str]]:
        """The records an import writes (new or replacing), and the passwords made."""
        vms: list[VM] = []
        generated: dict[str, str] = {}
        for item in parsed:
            previous = existing.get(item.spec.mac)
            spec, password = self._secured(item, previous)
            if password is not None:
                generated[spec.mac] = password
            if previous is None:
                vms.append(self._new_vm(spec))
            else:
                vms.append(replace(previous, spec=spec, updated_at=self._clock()))
        return vms, generated

    async def rearm(self, mac: str) -> VM:
        """New instance id, state back to registered: the guest configures itself again."""
        async with self._locks.guest(parse_mac(mac)):
            previous = await self.get(mac)
            now = self._clock()
            vm = replace(
                previous,
                instance_id=self._new_instance_id(),
                state=State.REGISTERED,
                state_times={State.REGISTERED.value: now},
                message=None,
                updated_at=now,
            )
            await self.store.replace(vm, event=ChangeEvent.STATE)
            return vm

    # --- state changes --------------------------------------------------------------

    async def set_state(self, mac: str, state: State, message: str | None = None) -> VM:
        async with self._locks.guest(parse_mac(mac)):
            previous = await self.get(mac)
            vm = previous.with_state(state, self._clock(), message)
            await self.store.replace(vm, event=ChangeEvent.STATE)
            return vm

    async def mark_fetched(self, mac: str) -> None:
        """The guest read its document: registered/leased → fetched; later states stay.

        Best effort: during a registry outage the guest still gets its document (from
        memory); only the mark is lost, and its status report comes later anyway.
        """
        async with self._locks.guest(mac):
            try:
                previous = await self.store.get(mac)
                if previous is None or previous.state not in (State.REGISTERED, State.LEASED):
                    return
                vm = previous.with_state(State.FETCHED, self._clock(), previous.message)
                await self.store.replace(vm, event=ChangeEvent.STATE)
            except Unavailable as exc:
                log.warning("could not mark %s fetched: %s", mac, exc.detail)

    async def mark_leased(self, mac: str, address: str) -> VM:
        """The DHCP server gave the guest a lease: registered → leased. The first lease
        since the guest was armed is recorded even when the guest is further along
        already (the lease hook runs after the exchange, and a quick guest may have read
        its document by then); renewals are no news. A lease for another address than
        the reserved one records nothing (it is only logged): that guest is not where
        its record says, and the reservation decides its next lease."""
        async with self._locks.guest(parse_mac(mac)):
            previous = await self.get(mac)
            if address != previous.spec.ipv4.address:
                log.warning(
                    "guest %s leased %s but reserves %s: not recorded",
                    previous.mac,
                    address,
                    previous.spec.ipv4.address,
                )
                return previous
            if State.LEASED.value in previous.state_times:
                return previous
            now = self._clock()
            if previous.state is State.REGISTERED:
                vm = previous.with_state(State.LEASED, now, previous.message)
            else:
                times = {**previous.state_times, State.LEASED.value: now}
                vm = replace(previous, state_times=times, updated_at=now)
            await self.store.replace(vm, event=ChangeEvent.STATE)
            return vm

    # --- the change feed, and waiting on it ---------------------------------------------

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Hear every committed batch of changes; returns the function that stops it."""
        return self.store.subscribe(listener)

    def _follow(self, changes: Sequence[Change]) -> None:
        for change in changes:
            for watch in self._watched.get(change.mac, ()):
                watch.record, watch.heard = change.vm, True
            self._waiters.wake(change.mac)

    async def wait(
        self, mac: str, until: Callable[[VM | None], bool], timeout: float | None
    ) -> VM | None:
        """The guest's record as soon as `until(record)` holds (the record is None once the
        guest is deleted), or as it is when `timeout` seconds have passed."""
        the_mac = parse_mac(mac)
        watch = _Watch()

        def check() -> _Watch | None:
            return watch if until(watch.record) else None

        watched = self._watched.setdefault(the_mac, [])
        watched.append(watch)
        try:
            # Watched before it is read: a change committed meanwhile is not missed.
            current = await self.store.get(the_mac)
            if not watch.heard:
                watch.record = current
            await self._waiters.wait(the_mac, check, timeout)
            return watch.record
        finally:
            watched.remove(watch)
            if not watched:
                del self._watched[the_mac]

    async def wait_for_state(self, mac: str, *, unlike: State | None, timeout: float) -> VM:
        """The record once its state differs from `unlike` (default: its state now)."""
        vm = await self.get(mac)
        baseline = unlike or vm.state
        found = await self.wait(
            vm.mac, lambda record: record is None or record.state is not baseline, timeout
        )
        if found is None:
            raise NotFound(f"guest {vm.mac} was deleted", field="mac")
        return found


def _parse_rows(rows: Sequence[object], rules: AddressRules) -> list[VMInput]:
    """Every row parsed, or InvalidRows naming each bad one."""
    parsed: list[VMInput] = []
    errors: list[RowError] = []
    for index, row in enumerate(rows):
        try:
            parsed.append(parse_vm(row, rules=rules))
        except MetadataError as exc:
            errors.append(RowError(index, exc.field, exc.detail))
    if errors:
        raise InvalidRows(errors)
    return parsed


def status_json(vm: VM) -> dict[str, Any]:
    return {
        "mac": vm.mac,
        "instance_id": vm.instance_id,
        "state": vm.state.value,
        "state_times": {name: iso_time(at) for name, at in vm.state_times.items()},
        "message": vm.message,
    }
