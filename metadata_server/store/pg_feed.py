"""Other servers' changes, followed through LISTEN/NOTIFY; outages noticed and survived.

Every write transaction sends a NOTIFY on `CHANGE_CHANNEL` naming its origin (one id per
store), its change sequence number and, for a delete, the MAC. This feed holds one
connection that LISTENs; on a notification from another origin it re-reads every row
whose `updated_seq` is above the highest it has seen (one query however many rows an
import wrote) and publishes them as `Change` events, plus a `deleted` event for each
deleted MAC that is really gone.

When the connection drops (PostgreSQL stopped, restarted or failed over) the feed marks
the store unhealthy, logs it once, and reconnects with exponential backoff. Then it
catches up: rows above its sequence number, and a diff of the MAC set it knows against
the MACs stored, so deletions it missed are published too. A periodic `SELECT 1` notices
a connection that died silently.

Publishing and the store's own writes share one lock, so a re-read can never publish an
older version of a record after the store published a newer one. The feed never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from metadata_server.store.base import Change, ChangeEvent
from metadata_server.store.health import StoreHealth
from metadata_server.store.pg_errors import reason
from metadata_server.store.pg_schema import CHANGE_CHANNEL
from metadata_server.store.records import vm_from_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedTimings:
    connect_timeout: float = 5.0
    command_timeout: float = 10.0
    probe_interval: float = 2.0  # how often an idle connection is checked
    backoff_initial: float = 0.25
    backoff_max: float = 5.0


def notification(
    origin: str,
    seq: int,
    *,
    macs: Sequence[str] = (),
    deleted: str | None = None,
    count: int | None = None,
) -> str:
    """The NOTIFY payload of one write transaction (well under PostgreSQL's 8000 bytes:
    an import sends its row count, not its MACs)."""
    # `at`: when the writer committed, so a listener can tell how far behind it is.
    body: dict[str, object] = {"origin": origin, "seq": seq, "at": round(time.time(), 3)}
    if deleted is not None:
        body["deleted"] = deleted
    elif count is not None:
        body["count"] = count
    else:
        body["macs"] = list(macs)
    return json.dumps(body, separators=(",", ":"))


class ChangeFeed:
    def __init__(
        self,
        url: str,
        *,
        label: str,
        origin: str,
        publish: Callable[[Sequence[Change]], None],
        lock: asyncio.Lock,
        timings: FeedTimings,
        hide: str | None,
    ) -> None:
        self._url = url
        self._label = label  # the redacted URL, for messages
        self._origin = origin
        self._publish = publish
        self._lock = lock
        self._t = timings
        self._hide = hide
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pending = False
        self._pending_deleted: set[str] = set()
        # The change sequence number of the version of each record last published; its
        # keys are the MACs subscribers know, for spotting deletions after an outage.
        self._seen: dict[str, int] = {}
        self._last_seq = 0
        self._lag = 0.0
        self._health = StoreHealth(backend="postgresql")

    @property
    def health(self) -> StoreHealth:
        return self._health

    def lag(self) -> float:
        """How far behind other servers' commits this one is: the delay of the last
        notification heard, or, while disconnected, the time since the outage began."""
        since = self._health.since
        if not self._health.healthy and since is not None:
            return max(0.0, time.time() - since)
        return self._lag

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, LISTEN, and take the baseline. Errors propagate (open() reports them)."""
        self._conn = await self._connect()
        try:
            async with self._lock:
                rows = await self._conn.fetch("SELECT mac, updated_seq FROM vms")
                self._seen = {row["mac"]: row["updated_seq"] for row in rows}
                self._last_seq = max(self._seen.values(), default=0)
        except BaseException:
            await self._drop_connection()
            raise
        self._task = asyncio.create_task(self._run(), name="postgres-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def _connect(self) -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._url,
            timeout=self._t.connect_timeout,
            command_timeout=self._t.command_timeout,
            server_settings={"application_name": "metadata-server feed"},
        )
        try:
            await conn.add_listener(CHANGE_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), self._t.connect_timeout)
        except Exception:  # closing a broken connection may fail in many ways
            conn.terminate()

    # --- what the store tells the feed -----------------------------------------------

    def note_local(self, changes: Iterable[Change], seq: int) -> None:
        """The store committed and published `changes` under sequence number `seq`."""
        for change in changes:
            if change.vm is None:
                self._seen.pop(change.mac, None)
            else:
                self._seen[change.mac] = seq
        # Writes are serialised cluster-wide, so when no number was skipped nobody else
        # committed in between and the re-read of our own rows can be skipped.
        if seq == self._last_seq + 1:
            self._last_seq = seq

    # --- notifications --------------------------------------------------------------

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if body.get("origin") == self._origin:
            return  # published locally right after the commit
        at = body.get("at")
        if isinstance(at, int | float) and not isinstance(at, bool):
            self._lag = max(0.0, time.time() - at)
        deleted = body.get("deleted")
        if isinstance(deleted, str):
            self._pending_deleted.add(deleted)
        self._pending = True
        self._wake.set()

    def _on_terminated(self, conn: object) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._t.backoff_initial
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._drop_connection()
                    self._conn = await self._connect()
                    caught_up = await self._catch_up(full=True)
                    self._recovered(caught_up)
                    backoff = self._t.backoff_initial
                await self._serve_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: report, back off, reconnect
                self._failed(exc)
                await self._drop_connection()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311 (back-off jitter)
                backoff = min(backoff * 2, self._t.backoff_max)

    async def _serve_once(self) -> None:
        """Wait for a notification or the probe interval, then catch up or probe."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._t.probe_interval)
        self._wake.clear()
        conn = self._conn
        if conn is None or conn.is_closed():
            raise ConnectionError("the connection was closed")
        if self._pending or self._pending_deleted:
            await self._catch_up(full=False)
        else:
            await conn.fetchval("SELECT 1", timeout=self._t.command_timeout)

    async def _catch_up(self, *, full: bool) -> int:
        """Publish what changed since the last re-read; returns how many changes.

        `full` (after a reconnect) also diffs the MAC sets, since deletions missed while
        disconnected left no notification to read.
        """
        conn = self._conn
        assert conn is not None
        async with self._lock:
            self._pending = False
            deleted, self._pending_deleted = self._pending_deleted, set()
            try:
                rows = await conn.fetch(
                    "SELECT mac, last_event, record, updated_seq FROM vms "
                    "WHERE updated_seq > $1 ORDER BY updated_seq, mac",
                    self._last_seq,
                )
                if full:
                    present = {row["mac"] for row in await conn.fetch("SELECT mac FROM vms")}
                    gone = set(self._seen) - present
                elif deleted:
                    found = await conn.fetch(
                        "SELECT mac FROM vms WHERE mac = ANY($1::text[])", list(deleted)
                    )
                    gone = deleted - {row["mac"] for row in found}
                else:
                    gone = set()
            except BaseException:
                self._pending_deleted |= deleted  # a full catch-up follows a reconnect
                raise
            changes: list[Change] = []
            for row in rows:
                mac, seq = row["mac"], row["updated_seq"]
                self._last_seq = max(self._last_seq, seq)
                if self._seen.get(mac) == seq:
                    continue  # this version was published already (a local write)
                self._seen[mac] = seq
                event = ChangeEvent(row["last_event"])
                changes.append(Change(event, mac, vm_from_record(row["record"])))
            for mac in sorted(gone):
                self._seen.pop(mac, None)
                changes.append(Change(ChangeEvent.DELETED, mac, None))
            if changes:
                self._publish(changes)
            return len(changes)

    # --- health ---------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        why = reason(exc, hide=self._hide)
        if self._health.healthy:
            log.warning(
                "lost the registry database %s (%s): serving guests from memory, reconnecting",
                self._label,
                why,
            )
            self._health = StoreHealth("postgresql", False, why, time.time())
        else:
            log.debug("still cannot reach %s: %s", self._label, why)
            self._health = StoreHealth("postgresql", False, why, self._health.since)

    def _recovered(self, caught_up: int) -> None:
        if not self._health.healthy:
            down = time.time() - (self._health.since or time.time())
            log.warning(
                "reconnected to the registry database %s after %.1f s; caught up %d changes",
                self._label,
                down,
                caught_up,
            )
        self._health = StoreHealth(backend="postgresql")
