"""The guest fast path's memory: every guest's documents, rendered once, found by address.

Loaded from the store at start and kept current by the store's change feed, so a guest
request never touches the database. Replacing a document is a dict assignment, which is
atomic for readers on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from metadata_server.documents import DocumentOptions, GuestDocument, render_guest_document
from metadata_server.model import VM
from metadata_server.store.base import Change


class GuestSnapshot:
    """`host`: serve only the guests whose record names this Dom0 (a cluster member);
    None serves every guest. A guest moved to another Dom0 leaves this snapshot."""

    def __init__(self, options: DocumentOptions, *, host: str | None = None) -> None:
        self.options = options
        self.host = host
        self._by_address: dict[str, GuestDocument] = {}
        self._address_of_mac: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._by_address)

    def load(self, vms: Iterable[VM]) -> None:
        self._by_address.clear()
        self._address_of_mac.clear()
        for vm in vms:
            self._put(vm)

    def _put(self, vm: VM) -> None:
        self._drop(vm.mac)
        if self.host is not None and vm.spec.host != self.host:
            self._wake(vm.mac)
            return
        document = render_guest_document(vm, self.options)
        self._by_address[vm.spec.ipv4.address] = document
        self._address_of_mac[vm.mac] = vm.spec.ipv4.address
        self._wake(vm.mac)

    def _wake(self, mac: str) -> None:
        for waiter in self._waiters.pop(mac, []):
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, mac: str) -> None:
        address = self._address_of_mac.pop(mac, None)
        current = self._by_address.get(address) if address is not None else None
        if current is not None and current.view.mac == mac:
            del self._by_address[current.view.address]

    def apply(self, changes: Sequence[Change]) -> None:
        """The store's change listener."""
        for change in changes:
            if change.vm is None:
                self._drop(change.mac)
                self._wake(change.mac)
            else:
                self._put(change.vm)

    def reservations(self) -> list[tuple[str, str]]:
        """(MAC, reserved IPv4 address) of every guest served here."""
        return list(self._address_of_mac.items())

    def by_address(self, address: str) -> GuestDocument | None:
        return self._by_address.get(address)

    def by_mac(self, mac: str) -> GuestDocument | None:
        address = self._address_of_mac.get(mac)
        return self._by_address.get(address) if address else None

    async def wait_for_change(self, mac: str, etag: str, timeout: float) -> GuestDocument | None:
        """The guest's document once its ETag differs from `etag`, or after `timeout`
        seconds the document as it is then (None when the guest is gone)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            document = self.by_mac(mac)
            remaining = deadline - loop.time()
            if document is None or document.etag != etag or remaining <= 0:
                return document
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(mac, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                waiters = self._waiters.get(mac, [])
                if waiter in waiters:
                    waiters.remove(waiter)
