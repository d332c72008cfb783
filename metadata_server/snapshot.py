"""The guest fast path's memory: every guest's documents, rendered once, found by address.

Loaded from the store at start and kept current by the store's change feed, so a guest
request never touches the database. Replacing a document is a dict assignment, which is
atomic for readers on the event loop.

A changed record is rendered when its guest first asks, not when the change arrives: a
change batch is applied on the event loop in one go, and rendering every guest of a
50,000-row import there would stall every guest for seconds (about 35 µs a guest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from metadata_server.documents import DocumentOptions, GuestDocument, render_guest_document
from metadata_server.model import VM
from metadata_server.store.base import Change
from metadata_server.waiting import KeyedWaiters


class GuestSnapshot:
    """`host`: serve only the guests whose record names this Dom0 (a cluster member);
    None serves every guest. A guest moved to another Dom0 leaves this snapshot."""

    def __init__(self, options: DocumentOptions, *, host: str | None = None) -> None:
        self.options = options
        self.host = host
        self._by_address: dict[str, GuestDocument] = {}
        self._unrendered: dict[str, VM] = {}  # by address; never also in _by_address
        self._address_of_mac: dict[str, str] = {}
        self._waiters = KeyedWaiters()

    def __len__(self) -> int:
        return len(self._by_address) + len(self._unrendered)

    def load(self, vms: Iterable[VM]) -> None:
        self._by_address.clear()
        self._unrendered.clear()
        self._address_of_mac.clear()
        for vm in vms:
            self._put(vm)

    def _put(self, vm: VM) -> None:
        self._drop(vm.mac)
        if self.host is not None and vm.spec.host != self.host:
            self._wake(vm.mac)
            return
        address = vm.spec.ipv4.address
        self._by_address.pop(address, None)  # whoever held it before this batch
        self._unrendered[address] = vm
        self._address_of_mac[vm.mac] = address
        self._wake(vm.mac)

    def _wake(self, mac: str) -> None:
        self._waiters.wake(mac)

    def _drop(self, mac: str) -> None:
        address = self._address_of_mac.pop(mac, None)
        if address is None:
            return
        current = self._by_address.get(address)
        if current is not None and current.view.mac == mac:
            del self._by_address[address]
        waiting = self._unrendered.get(address)
        if waiting is not None and waiting.mac == mac:
            del self._unrendered[address]

    def apply(self, changes: Sequence[Change]) -> None:
        """The store's change listener."""
        for change in changes:
            if change.vm is None:
                self._drop(change.mac)
                self._wake(change.mac)
            else:
                self._put(change.vm)

    def count_by_state(self) -> dict[str, int]:
        """How many guests served here are in each state."""
        counts: dict[str, int] = {}
        for state in [d.state for d in self._by_address.values()] + [
            vm.state for vm in self._unrendered.values()
        ]:
            counts[state.value] = counts.get(state.value, 0) + 1
        return counts

    def address_of(self, mac: str) -> str | None:
        """The address reserved for `mac`, if its guest is served here."""
        return self._address_of_mac.get(mac)

    def reservations(self) -> list[tuple[str, str]]:
        """(MAC, reserved IPv4 address) of every guest served here."""
        return list(self._address_of_mac.items())

    def by_address(self, address: str) -> GuestDocument | None:
        document = self._by_address.get(address)
        if document is None and address in self._unrendered:
            document = self._render(address)
        return document

    def _render(self, address: str) -> GuestDocument:
        # Rendered before it leaves _unrendered: a record that fails to render fails
        # its own guest's request, again at the next one, and nobody else's.
        document = render_guest_document(self._unrendered[address], self.options)
        del self._unrendered[address]
        self._by_address[address] = document
        return document

    def by_mac(self, mac: str) -> GuestDocument | None:
        address = self._address_of_mac.get(mac)
        return self.by_address(address) if address else None

    async def wait_for_change(self, mac: str, etag: str, timeout: float) -> GuestDocument | None:
        """The guest's document once its ETag differs from `etag`, or after `timeout`
        seconds the document as it is then (None when the guest is gone)."""

        def changed() -> tuple[GuestDocument | None] | None:
            document = self.by_mac(mac)
            return (document,) if document is None or document.etag != etag else None

        answer = await self._waiters.wait(mac, changed, timeout)
        return answer[0] if answer is not None else self.by_mac(mac)
