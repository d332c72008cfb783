"""The cluster registry: PostgreSQL through asyncpg, shared by every metadata server.

Same contract as the SQLite store (whole records, uniqueness of MAC, address and
hostname+domain with the same `Conflict`/`ConflictRows`, all-or-nothing imports,
listeners told only after a commit). Every write transaction first takes one advisory
lock, so writes from all servers are serialised: the uniqueness checks see every earlier
commit, and the change sequence number each transaction takes is in commit order. The
same transaction sends a NOTIFY; `pg_feed.ChangeFeed` turns other servers' notifications
into change events here.

An outage at run time is `Unavailable` (503) for the caller and a report in `health`;
guests keep being served from memory. At start, an unreachable database, bad
credentials, a bad URL or a newer schema is a `ConfigError` and nothing is changed.
The connection password never appears in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg

from metadata_server.errors import ConfigError, Conflict, ConflictRows, NotFound
from metadata_server.model import VM, State
from metadata_server.store import dsn
from metadata_server.store.base import Change, ChangeEvent, ChangeListener, Listeners
from metadata_server.store.health import StoreHealth
from metadata_server.store.migrations import SchemaState
from metadata_server.store.pg_errors import BROKEN_CONNECTION, OUTAGES, reason, unavailable
from metadata_server.store.pg_feed import ChangeFeed, FeedTimings, notification
from metadata_server.store.pg_schema import CHANGE_CHANNEL, WRITE_LOCK, migrate
from metadata_server.store.records import name_key, vm_from_record, vm_to_record
from metadata_server.store.uniqueness import (
    address_taken,
    import_errors,
    mac_taken,
    name_taken,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_UPSERT = (
    "INSERT INTO vms (mac, ipv4, name_key, state, host, last_event, updated_seq, record) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (mac) DO UPDATE SET ipv4 = EXCLUDED.ipv4, name_key = EXCLUDED.name_key, "
    "state = EXCLUDED.state, host = EXCLUDED.host, last_event = EXCLUDED.last_event, "
    "updated_seq = EXCLUDED.updated_seq, record = EXCLUDED.record"
)


@dataclass
class _Write:
    """What one write transaction did: its events and its NOTIFY payload."""

    changes: list[Change] = field(default_factory=list)
    payload: str | None = None


def _row(vm: VM, event: ChangeEvent, seq: int, record: str | None = None) -> tuple[Any, ...]:
    return (
        vm.mac,
        vm.spec.ipv4.address,
        name_key(vm),
        vm.state.value,
        vm.spec.host,
        event,
        seq,
        record if record is not None else vm_to_record(vm),
    )


_FIELD_OF_CONSTRAINT = {
    "vms_pkey": "mac",
    "vms_ipv4_unique": "ipv4.address",
    "vms_name_key_unique": "hostname",
}


def _late_conflict(exc: asyncpg.UniqueViolationError) -> Conflict:
    field_name = _FIELD_OF_CONSTRAINT.get(getattr(exc, "constraint_name", "") or "", "mac")
    return Conflict(
        f"{field_name} was taken by a concurrent change; try again",
        field=field_name,
        holder="",
    )


def _password_of(url: str) -> str | None:
    """The password in `url` (user part or `password=`), to mask in error texts."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    if password:
        return unquote(password)
    for segment in parts.query.split("&"):
        key, _, value = segment.partition("=")
        if key.lower() == "password" and value:
            return unquote(value)
    return None


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        follow_changes: bool = True,
        timings: FeedTimings | None = None,
        pool_size: int = 4,
    ) -> None:
        dsn.check(url)
        self._url = url  # holds the password: never log it, use self.label
        self.label = dsn.redact(url)
        self.schema = SchemaState(before=0, after=0)
        self._hide = _password_of(url)
        self._follow = follow_changes
        self._t = timings or FeedTimings()
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._feed: ChangeFeed | None = None
        self._feed_out = Listeners()  # in-process subscribers
        self._origin = uuid.uuid4().hex
        # Held around each write and its publication, and by the feed around each
        # re-read and its publication: events reach listeners in commit order.
        self._publish_lock = asyncio.Lock()

    # --- plumbing -------------------------------------------------------------------

    @property
    def health(self) -> StoreHealth:
        return self._feed.health if self._feed is not None else StoreHealth("postgresql")

    def feed_lag(self) -> float | None:
        """Seconds behind other servers' changes (None before the feed started)."""
        return self._feed.lag() if self._feed is not None else None

    def _publish(self, changes: Sequence[Change]) -> None:
        self._feed_out.publish(changes)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        return self._feed_out.subscribe(listener)

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=0,  # no floor to restore (and warn about) during an outage
                max_size=self._pool_size,
                timeout=self._t.connect_timeout,
                command_timeout=self._t.command_timeout,
                max_inactive_connection_lifetime=60.0,
                server_settings={
                    "application_name": "metadata-server",
                    "lock_timeout": f"{int(self._t.command_timeout * 1000)}ms",
                    "idle_in_transaction_session_timeout": "60s",
                },
            )
            async with self._pool.acquire(timeout=self._t.connect_timeout) as conn:
                self.schema = await migrate(conn, database=self.label)
            if self._follow:
                self._feed = ChangeFeed(
                    self._url,
                    label=self.label,
                    origin=self._origin,
                    publish=self._publish,
                    lock=self._publish_lock,
                    timings=self._t,
                    hide=self._hide,
                )
                await self._feed.start()
        except ConfigError:
            await self.close()
            raise
        except (*OUTAGES, asyncpg.PostgresError, ValueError) as exc:
            await self.close()
            raise ConfigError(
                f"cannot open the registry database {self.label}: {reason(exc, hide=self._hide)}"
            ) from None
        if self.schema.migrated:
            log.info(
                "migrated %s from schema version %d to %d",
                self.label,
                self.schema.before,
                self.schema.after,
            )
        log.info("registry: PostgreSQL at %s", self.label)

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.stop()
            self._feed = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._t.connect_timeout)
            except Exception:  # a pool whose server is gone may not close cleanly
                pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failing to get one (down, refused, cannot log in) is an
        outage, whatever the reason."""
        pool = self._require_pool()
        try:
            conn = await pool.acquire(timeout=self._t.connect_timeout)
        except (*OUTAGES, asyncpg.PostgresError) as exc:
            raise unavailable(exc, hide=self._hide) from None
        try:
            yield conn
        finally:
            try:
                await pool.release(conn, timeout=self._t.connect_timeout)
            except Exception:  # the pool drops a connection it cannot reset
                log.debug("dropped a broken pooled connection")

    async def _read(self, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    return await query(conn)
            except OUTAGES as exc:
                # A pooled connection may have died with a restarted server; reads are
                # safe to repeat once on a fresh one. A timeout is not repeated.
                if attempt == 2 or not isinstance(exc, BROKEN_CONNECTION):
                    raise unavailable(exc, hide=self._hide) from None
        raise AssertionError("unreachable")

    async def _write(self, body: Callable[[asyncpg.Connection, int], Awaitable[_Write]]) -> None:
        """Run `body` in one transaction holding the cluster-wide write lock, with the
        transaction's change sequence number; NOTIFY, commit, then publish."""
        async with self._publish_lock:
            try:
                async with self._connection() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                    seq: int = await conn.fetchval("SELECT nextval('vm_change_seq')")
                    done = await body(conn, seq)
                    if done.payload is not None:
                        await conn.execute("SELECT pg_notify($1, $2)", CHANGE_CHANNEL, done.payload)
            except asyncpg.UniqueViolationError as exc:
                # Not reachable through this store (the write lock orders every check
                # before its insert); a row written around it is still refused cleanly.
                raise _late_conflict(exc) from None
            except OUTAGES as exc:
                raise unavailable(exc, hide=self._hide) from None
            if self._feed is not None:
                self._feed.note_local(done.changes, seq)
            if done.changes or done.payload is not None:
                self._publish(done.changes)

    # --- reads ----------------------------------------------------------------------

    async def get(self, mac: str) -> VM | None:
        async def query(conn: asyncpg.Connection) -> VM | None:
            record = await conn.fetchval("SELECT record FROM vms WHERE mac = $1", mac)
            return vm_from_record(record) if record is not None else None

        return await self._read(query)

    async def list(self, *, state: State | None = None, host: str | None = None) -> list[VM]:
        clauses: list[str] = []
        args: list[Any] = []
        if state is not None:
            args.append(state.value)
            clauses.append(f"state = ${len(args)}")
        if host is not None:
            args.append(host)
            clauses.append(f"host = ${len(args)}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f'SELECT record FROM vms{where} ORDER BY mac COLLATE "C"'  # noqa: S608 (built of constants; values are $n arguments)

        async def query(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

        rows = await self._read(query)
        # Decoding 50,000 records takes about a second: not on the event loop.
        return await asyncio.to_thread(lambda: [vm_from_record(row["record"]) for row in rows])

    # --- writes ---------------------------------------------------------------------

    @staticmethod
    async def _check_clash(conn: asyncpg.Connection, vm: VM) -> None:
        """Raise the Conflict for the first unique field of `vm` another record holds."""
        rows = await conn.fetch(
            "SELECT mac, ipv4 = $2 AS same_address FROM vms "
            "WHERE (ipv4 = $2 OR name_key = $3) AND mac <> $1",
            vm.mac,
            vm.spec.ipv4.address,
            name_key(vm),
        )
        for row in rows:
            if row["same_address"]:
                raise address_taken(vm, row["mac"])
        if rows:
            raise name_taken(vm, rows[0]["mac"])

    def _single(self, event: ChangeEvent, vm: VM, seq: int) -> _Write:
        change = Change(ChangeEvent(event), vm.mac, vm)
        return _Write([change], notification(self._origin, seq, macs=[vm.mac]))

    async def create(self, vm: VM) -> None:
        async def body(conn: asyncpg.Connection, seq: int) -> _Write:
            if await conn.fetchval("SELECT 1 FROM vms WHERE mac = $1", vm.mac):
                raise mac_taken(vm)
            await self._check_clash(conn, vm)
            await conn.execute(_UPSERT, *_row(vm, ChangeEvent.CREATED, seq))
            return self._single(ChangeEvent.CREATED, vm, seq)

        await self._write(body)

    async def replace(self, vm: VM, *, event: ChangeEvent = ChangeEvent.UPDATED) -> None:
        async def body(conn: asyncpg.Connection, seq: int) -> _Write:
            if not await conn.fetchval("SELECT 1 FROM vms WHERE mac = $1", vm.mac):
                raise NotFound(f"no guest with MAC {vm.mac}", field="mac")
            await self._check_clash(conn, vm)
            await conn.execute(_UPSERT, *_row(vm, event, seq))
            return self._single(event, vm, seq)

        await self._write(body)

    async def delete(self, mac: str) -> bool:
        deleted = False

        async def body(conn: asyncpg.Connection, seq: int) -> _Write:
            nonlocal deleted
            deleted = await conn.execute("DELETE FROM vms WHERE mac = $1", mac) != "DELETE 0"
            if not deleted:
                return _Write()
            return _Write(
                [Change(ChangeEvent.DELETED, mac, None)],
                notification(self._origin, seq, deleted=mac),
            )

        await self._write(body)
        return deleted

    async def import_all(self, vms: Sequence[VM]) -> None:
        macs = [vm.mac for vm in vms]
        # The per-row work (records, the uniqueness check) on a worker thread: for
        # 50,000 rows it takes about a second, which the event loop cannot spare.
        records = await asyncio.to_thread(lambda: [vm_to_record(vm) for vm in vms])

        async def body(conn: asyncpg.Connection, seq: int) -> _Write:
            stored = await conn.fetch("SELECT mac, ipv4, name_key FROM vms")
            inside = set(macs)
            existing = {row["mac"] for row in stored}
            others = [
                (row["mac"], row["ipv4"], row["name_key"])
                for row in stored
                if row["mac"] not in inside
            ]
            errors = await asyncio.to_thread(import_errors, vms, others)
            if errors:
                raise ConflictRows(errors)
            changes = [
                Change(
                    ChangeEvent.UPDATED if vm.mac in existing else ChangeEvent.CREATED, vm.mac, vm
                )
                for vm in vms
            ]
            await conn.execute("DELETE FROM vms WHERE mac = ANY($1::text[])", macs)
            await conn.executemany(
                _UPSERT,
                [
                    _row(change.vm, change.event, seq, record)
                    for change, record in zip(changes, records, strict=True)
                    if change.vm
                ],
            )
            # One notification for the whole import: the others re-read by sequence.
            return _Write(changes, notification(self._origin, seq, count=len(changes)))

        await self._write(body)
