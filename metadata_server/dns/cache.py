"""Remembers the replies `answer()` gave for one Zone, so a repeated query is a dict lookup.

`answer()` is a pure function of (query bytes, zone, max_udp, transport), and a reply's
only query-specific part beyond those is the id in its first two bytes. So the reply to
the same bytes after the id, for the same Zone object, is the same: this memo can never
be stale. A new Zone (any registry change) empties it. Only replies are kept (never a
forward or a drop), and only for queries of ordinary size; when full it starts over,
so random names cannot make it grow. Pure: no I/O, no clock.
"""

from __future__ import annotations

from metadata_server.dns.answer import Decision, Reply, Transport, answer
from metadata_server.dns.zone import Zone

MAX_ENTRIES = 8192
MAX_KEY_BYTES = 512


class AnswerCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._zone: Zone | None = None
        self._replies: dict[tuple[str, bytes], bytes] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._replies)

    def answer(self, query: bytes, zone: Zone, *, max_udp: int, transport: Transport) -> Decision:
        """What `answer()` says, from memory when this Zone answered these bytes before."""
        if zone is not self._zone:
            self._zone = zone
            self._replies = {}
        key = (transport, bytes(query[2:]))
        cached = self._replies.get(key)
        if cached is not None:
            self.hits += 1
            return Reply(query[:2] + cached)
        self.misses += 1
        decision = answer(query, zone, max_udp=max_udp, transport=transport)
        if isinstance(decision, Reply) and 12 <= len(query) <= MAX_KEY_BYTES:
            if len(self._replies) >= self.max_entries:
                self._replies = {}
            self._replies[key] = decision.packet[2:]
        return decision
