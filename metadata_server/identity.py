"""Who is asking: a guest request's peer address → that guest's own documents.

The caller is the TCP peer. `X-Forwarded-For` counts only when the peer is a trusted
proxy (then the proxy vouches for the client, so no neighbour check applies). Otherwise
the record that reserves the peer address must also be the MAC that holds the address
in the neighbour table (`verify`: `always`; `auto` skips peers on this host itself;
`never`). An unknown caller learns nothing about other guests.

The neighbour check is made once per TCP connection (a connection cannot change its
peer), by a lookup that started after the connection opened, and it is made again when
the kernel reports a change of that address's neighbour entry. `ConnectionProof` is what
one connection has shown so far; `lookup` answers from it without waiting, `resolve`
asks the kernel when it cannot.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from metadata_server.documents import GuestDocument
from metadata_server.errors import Forbidden, NotFound, Unavailable
from metadata_server.model import VERIFY_MODES
from metadata_server.netlink import LookupTimeout, PeerLink
from metadata_server.snapshot import GuestSnapshot

log = logging.getLogger(__name__)
SLOW_LOOKUP_LOG_INTERVAL = 10.0  # seconds between warnings about unanswered lookups


class NeighbourLookup(Protocol):
    def generation(self, address: str) -> int: ...

    async def peer_link(self, address: str, *, not_before: float) -> PeerLink: ...


class ConnectionProof:
    """What one TCP connection has proven about its peer: the neighbour answer for one
    address, valid while that address's neighbour generation stays the same.
    `opened_at` is on `time.monotonic()`'s clock."""

    __slots__ = ("address", "generation", "link", "opened_at")

    def __init__(self, opened_at: float) -> None:
        self.opened_at = opened_at
        self.address: str | None = None
        self.link: PeerLink | None = None
        self.generation = -1

    def link_for(self, address: str, generation: int) -> PeerLink | None:
        if address == self.address and generation == self.generation:
            return self.link
        return None

    def remember(self, address: str, link: PeerLink, generation: int) -> None:
        self.address, self.link, self.generation = address, link, generation


@dataclass(frozen=True)
class IdentityPolicy:
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    verify: str = "auto"


class Caller(NamedTuple):
    """The resolved guest and the address it was found by (a tuple: made per request)."""

    address: str
    document: GuestDocument
    via_proxy: bool


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class IdentityResolver:
    def __init__(
        self, snapshot: GuestSnapshot, policy: IdentityPolicy, neighbours: NeighbourLookup | None
    ) -> None:
        if policy.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}")
        if policy.verify != "never" and neighbours is None:
            raise ValueError("neighbour verification needs a neighbour lookup")
        self.snapshot = snapshot
        self.policy = policy
        self.neighbours = neighbours
        self._verifies = policy.verify != "never"
        self._skips_local = policy.verify == "auto"
        self._unanswered = 0  # lookups without an answer since the last warning
        self._warned_at = float("-inf")

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.policy.trusted_proxies)

    def is_trusted_proxy(self, peer: str) -> bool:
        """Whether `peer` is one of our proxies (which carry many guests' connections)."""
        address = _address(peer) if self.policy.trusted_proxies else None
        return address is not None and self._trusted(address)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> tuple[str, bool]:
        """The client's address and whether a trusted proxy named it."""
        if not (forwarded_for and self.policy.trusted_proxies):
            # The kernel's peer address is canonical text already; only an IPv4-mapped
            # IPv6 peer needs unwrapping.
            return peer.removeprefix("::ffff:"), False
        peer_address = _address(peer)
        if peer_address is None:
            raise NotFound("no configuration for this address")
        if not self._trusted(peer_address):
            return str(peer_address), False
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        # Walk from the nearest hop outwards; the first hop that is not one of our own
        # proxies is the client. Anything further left was written by the client.
        for hop in reversed(hops):
            hop_address = _address(hop)
            if hop_address is None:
                raise Forbidden("X-Forwarded-For holds something that is not an address")
            if not self._trusted(hop_address):
                return str(hop_address), True
        return str(peer_address), False

    @property
    def reads_forwarded_for(self) -> bool:
        """Whether X-Forwarded-For can matter at all (only with trusted proxies)."""
        return bool(self.policy.trusted_proxies)

    def lookup(
        self, peer: str, forwarded_for: Sequence[str], connection: ConnectionProof | None
    ) -> Caller | None:
        """The caller when the connection has already proven its peer (or no proof is
        needed); None when the kernel must be asked first (then use `resolve`). Raises
        NotFound for an unknown caller and Forbidden for one holding another's address."""
        address, via_proxy = self.client_address(peer, forwarded_for)
        document = self.snapshot.by_address(address)
        if document is None:
            raise NotFound("no configuration for this address")
        if via_proxy or not self._verifies:
            return Caller(address, document, via_proxy)
        if connection is None or self.neighbours is None:
            return None
        link = connection.link_for(address, self.neighbours.generation(address))
        if link is None:
            return None
        self._check(address, document, link)
        return Caller(address, document, False)

    async def resolve(
        self, peer: str, forwarded_for: Sequence[str], connection: ConnectionProof | None
    ) -> Caller:
        """The caller, asking the kernel's neighbour table when the connection has not
        proven its peer yet (a connection unknown to us proves nothing: asked every time)."""
        caller = self.lookup(peer, forwarded_for, connection)
        if caller is not None:
            return caller
        assert self.neighbours is not None
        address, _ = self.client_address(peer, forwarded_for)
        # Read before asking: a change reported while the lookup runs voids its answer.
        generation = self.neighbours.generation(address)
        opened_at = connection.opened_at if connection is not None else time.monotonic()
        try:
            link = await self.neighbours.peer_link(address, not_before=opened_at)
        except LookupTimeout as exc:
            self._note_unanswered(exc)
            raise Unavailable(
                "could not check in time who holds this address; try again", retry_after=1
            ) from None
        if connection is not None:
            connection.remember(address, link, generation)
        document = self.snapshot.by_address(address)  # the snapshot may have moved on
        if document is None:
            raise NotFound("no configuration for this address")
        self._check(address, document, link)
        return Caller(address, document, False)

    def _note_unanswered(self, exc: LookupTimeout) -> None:
        """Warn about unanswered lookups at most every SLOW_LOOKUP_LOG_INTERVAL seconds
        (a busy host has many at once)."""
        self._unanswered += 1
        now = time.monotonic()
        if now - self._warned_at >= SLOW_LOOKUP_LOG_INTERVAL:
            log.warning(
                "%s (%d such in the last %g s): the guest was asked to try again; is the "
                "host short of CPU?",
                exc,
                self._unanswered,
                SLOW_LOOKUP_LOG_INTERVAL,
            )
            self._unanswered, self._warned_at = 0, now

    def _check(self, address: str, document: GuestDocument, link: PeerLink) -> None:
        if link.local and self._skips_local:
            return
        if link.mac != document.view.mac:
            log.warning(
                "refused %s: it claims the address of %s but the neighbour table has %s",
                address,
                document.view.mac,
                link.mac or "no entry",
            )
            raise Forbidden("this address is not held by the guest it is reserved for")
