"""Who is asking: a guest request's peer address → that guest's own documents.

The caller is the TCP peer. `X-Forwarded-For` counts only when the peer is a trusted
proxy (then the proxy vouches for the client, so no neighbour check applies). Otherwise
the record that reserves the peer address must also be the MAC that holds the address
in the neighbour table (`verify`: `always`; `auto` skips peers on this host itself;
`never`). An unknown caller learns nothing about other guests.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from metadata_server.documents import GuestDocument
from metadata_server.errors import Forbidden, NotFound
from metadata_server.netlink import PeerLink
from metadata_server.snapshot import GuestSnapshot

log = logging.getLogger(__name__)

VERIFY_MODES = ("auto", "always", "never")


class NeighbourLookup(Protocol):
    def cached(self, address: str) -> PeerLink | None: ...

    async def peer_link(self, address: str) -> PeerLink: ...


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


def _no_cache(address: str) -> PeerLink | None:
    return None


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
        # Looked up once here rather than on every request.
        self._verifies = policy.verify != "never"
        self._skips_local = policy.verify == "auto"
        self._neighbours_cached = neighbours.cached if neighbours is not None else _no_cache

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.policy.trusted_proxies)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> tuple[str, bool]:
        """The client's address and whether a trusted proxy named it."""
        if not (forwarded_for and self.policy.trusted_proxies):
            # The common case, kept free of parsing: the kernel's peer address is already
            # canonical text; only an IPv4-mapped IPv6 peer needs unwrapping.
            return peer.removeprefix("::ffff:"), False
        peer_address = _address(peer)
        if peer_address is None:
            raise NotFound("no configuration for this address")
        if not forwarded_for or not self._trusted(peer_address):
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

    def resolve_now(self, peer: str, forwarded_for: Sequence[str] = ()) -> Caller | None:
        """The caller without waiting, when the answer is at hand (the usual case);
        None when the neighbour table must be asked first (then use `resolve`).
        Raises NotFound or Forbidden like `resolve`. On every guest request: kept lean."""
        if forwarded_for and self.policy.trusted_proxies:
            address, via_proxy = self.client_address(peer, forwarded_for)
        else:
            address, via_proxy = peer.removeprefix("::ffff:"), False
        document = self.snapshot.by_address(address)
        if document is None:
            raise NotFound("no configuration for this address")
        if not via_proxy and self._verifies:
            link = self._neighbours_cached(address)
            if link is None:
                return None
            if not (link.local and self._skips_local) and link.mac != document.view.mac:
                self._check(address, document, link)
        return Caller(address, document, via_proxy)

    async def resolve(self, peer: str, forwarded_for: Sequence[str] = ()) -> Caller:
        caller = self.resolve_now(peer, forwarded_for)
        if caller is not None:
            return caller
        address, _ = self.client_address(peer, forwarded_for)
        assert self.neighbours is not None
        link = await self.neighbours.peer_link(address)
        caller = self.resolve_now(peer, forwarded_for)  # the snapshot may have moved on
        if caller is not None:
            return caller
        document = self.snapshot.by_address(address)
        if document is None:
            raise NotFound("no configuration for this address")
        self._check(address, document, link)
        return Caller(address=address, document=document, via_proxy=False)

    def _check(self, address: str, document: GuestDocument, link: PeerLink) -> None:
        if link.local and self.policy.verify == "auto":
            return
        if link.mac != document.view.mac:
            log.warning(
                "refused %s: it claims the address of %s but the neighbour table has %s",
                address,
                document.view.mac,
                link.mac or "no entry",
            )
            raise Forbidden("this address is not held by the guest it is reserved for")
