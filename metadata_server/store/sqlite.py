"""The embedded registry: SQLite in WAL mode, one writer thread, one transaction per change.

sqlite3 calls block, so they all run on one dedicated thread; that also serialises
writes, which SQLite wants anyway. Each change is one `BEGIN IMMEDIATE` transaction,
so a process killed at any point leaves the previous or the next state, never a mix.
Listeners hear about a change only after its commit.

The database holds password hashes and user-data: its file is created 0600 (SQLite gives
the -wal and -shm files the database's mode), and a file left readable by an older
version is made 0600 on open. A full disk, a read-only or failing filesystem, or a lock
held too long fails the one change with a clear `Unavailable` (507 for a full disk),
rolls it back, and marks the store unhealthy (`/healthz` says `degraded` and why) until
a write succeeds again: a probe write every few seconds notices when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from metadata_server.errors import ConfigError, Conflict, ConflictRows, NotFound, Unavailable
from metadata_server.model import VM, State
from metadata_server.state_directory import make_state_directory
from metadata_server.store.base import Change, ChangeEvent, ChangeListener, Listeners
from metadata_server.store.health import StoreHealth
from metadata_server.store.migrations import (
    READ_VERSION,
    VERSION_TABLE_DDL,
    Migration,
    SchemaState,
    latest,
    plan,
    set_version_statements,
)
from metadata_server.store.records import name_key, vm_from_record, vm_to_record
from metadata_server.store.sqlite_errors import storage_error
from metadata_server.store.uniqueness import address_taken, import_errors, mac_taken, name_taken

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "guests keyed by MAC; address and hostname+domain unique",
        (
            """CREATE TABLE IF NOT EXISTS vms (
                mac TEXT PRIMARY KEY,
                ipv4 TEXT NOT NULL UNIQUE,
                name_key TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL,
                host TEXT,
                record TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS vms_state ON vms (state)",
            "CREATE INDEX IF NOT EXISTS vms_host ON vms (host)",
        ),
    ),
)
SCHEMA_VERSION = latest(MIGRATIONS)
PROBE_INTERVAL = 5.0  # seconds between probe writes while the store is unhealthy
# A write that changes nothing but still goes through the WAL to the disk.
_PROBE = "UPDATE schema_version SET version = version"


def _make_private(path: Path) -> None:
    """Create the database file 0600, or take group and other bits off an existing one
    (and its -wal and -shm), before SQLite opens it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        member = path.with_name(name)
        try:
            info = member.lstat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & 0o077:
            member.chmod(mode & 0o700)
            log.warning(
                "%s was readable by others (mode %04o): made it %04o", member, mode, mode & 0o700
            )


class SQLiteStore:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._feed_out = Listeners()  # in-process subscribers
        self.schema = SchemaState(before=0, after=0)
        self._clock = clock
        self._health = StoreHealth(backend="sqlite")
        self._probe: asyncio.Task[None] | None = None
        self.probe_interval = PROBE_INTERVAL

    @property
    def health(self) -> StoreHealth:
        return self._health

    # --- plumbing -------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the store is not open")

        def guarded(conn: sqlite3.Connection) -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                error = storage_error(exc, str(self.path))
                if error is None:
                    raise
                raise error from None

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, guarded, conn)
        except Unavailable as exc:
            self._degrade(exc.detail)
            raise

    def _degrade(self, reason: str) -> None:
        if self._health.healthy:
            log.error("the registry database cannot be used: %s", reason)
        since = self._health.since if self._health.since is not None else self._clock()
        self._health = StoreHealth("sqlite", healthy=False, last_error=reason, since=since)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_healthy(), name="sqlite-probe")

    def _recover(self) -> None:
        if not self._health.healthy:
            log.warning("the registry database takes writes again")
            self._health = StoreHealth("sqlite")

    async def _probe_until_healthy(self) -> None:
        while not self._health.healthy and self._conn is not None:
            await asyncio.sleep(self.probe_interval)
            with contextlib.suppress(Unavailable, RuntimeError):
                await self._transaction(lambda conn: conn.execute(_PROBE))

    def _publish(self, changes: Sequence[Change]) -> None:
        self._feed_out.publish(changes)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        return self._feed_out.subscribe(listener)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            try:
                make_state_directory(self.path.parent)
                _make_private(self.path)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the database {self.path}: {exc.strerror}"
                ) from None
            try:
                conn = sqlite3.connect(self.path, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=5000")
                try:
                    self.schema = self._migrate(conn)
                except BaseException:
                    conn.close()
                    raise
                return conn
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot open the database {self.path}: {exc}") from None

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect)
        if self.schema.migrated:
            log.info(
                "migrated %s from schema version %d to %d",
                self.path,
                self.schema.before,
                self.schema.after,
            )

    def _migrate(self, conn: sqlite3.Connection) -> SchemaState:
        """Bring the schema up to date in one transaction; refuse a newer one untouched."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(VERSION_TABLE_DDL)
            current = conn.execute(READ_VERSION).fetchone()[0]
            target = latest(MIGRATIONS)
            steps = plan(MIGRATIONS, current, database=str(self.path))
            for step in steps:
                for statement in step.statements:
                    conn.execute(statement)
            if steps:
                for statement in set_version_statements(target):
                    conn.execute(statement)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return SchemaState(before=current or 0, after=target)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # --- reads ----------------------------------------------------------------------

    async def get(self, mac: str) -> VM | None:
        def query(conn: sqlite3.Connection) -> VM | None:
            row = conn.execute("SELECT record FROM vms WHERE mac = ?", (mac,)).fetchone()
            return vm_from_record(row[0]) if row else None

        return await self._run(query)

    async def list(self, *, state: State | None = None, host: str | None = None) -> list[VM]:
        clauses: list[str] = []
        args: list[Any] = []
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        if host is not None:
            clauses.append("host = ?")
            args.append(host)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""

        def query(conn: sqlite3.Connection) -> list[VM]:
            rows = conn.execute(f"SELECT record FROM vms{where} ORDER BY mac", args).fetchall()  # noqa: S608 (built of constants; values are ? arguments)
            return [vm_from_record(row[0]) for row in rows]

        return await self._run(query)

    # --- writes ---------------------------------------------------------------------

    @staticmethod
    def _clash(conn: sqlite3.Connection, vm: VM) -> Conflict | None:
        """The first unique field of `vm` that another record holds."""
        row = conn.execute(
            "SELECT mac FROM vms WHERE ipv4 = ? AND mac != ?", (vm.spec.ipv4.address, vm.mac)
        ).fetchone()
        if row:
            return address_taken(vm, row[0])
        row = conn.execute(
            "SELECT mac FROM vms WHERE name_key = ? AND mac != ?", (name_key(vm), vm.mac)
        ).fetchone()
        return name_taken(vm, row[0]) if row else None

    @staticmethod
    def _write(conn: sqlite3.Connection, vm: VM) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO vms (mac, ipv4, name_key, state, host, record) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                vm.mac,
                vm.spec.ipv4.address,
                name_key(vm),
                vm.state.value,
                vm.spec.host,
                vm_to_record(vm),
            ),
        )

    async def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (full disk, I/O error) may leave the transaction open;
                # SQLite may also have rolled it back already (then ROLLBACK fails).
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

        result = await self._run(run)
        self._recover()
        return result

    async def create(self, vm: VM) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM vms WHERE mac = ?", (vm.mac,)).fetchone():
                raise mac_taken(vm)
            clash = self._clash(conn, vm)
            if clash:
                raise clash
            self._write(conn, vm)

        await self._transaction(body)
        self._publish([Change(ChangeEvent.CREATED, vm.mac, vm)])

    async def replace(self, vm: VM, *, event: ChangeEvent = ChangeEvent.UPDATED) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if not conn.execute("SELECT 1 FROM vms WHERE mac = ?", (vm.mac,)).fetchone():
                raise NotFound(f"no guest with MAC {vm.mac}", field="mac")
            clash = self._clash(conn, vm)
            if clash:
                raise clash
            self._write(conn, vm)

        await self._transaction(body)
        self._publish([Change(ChangeEvent(event), vm.mac, vm)])

    async def delete(self, mac: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM vms WHERE mac = ?", (mac,)).rowcount > 0

        deleted = await self._transaction(body)
        if deleted:
            self._publish([Change(ChangeEvent.DELETED, mac, None)])
        return deleted

    async def import_all(self, vms: Sequence[VM]) -> None:
        def body(conn: sqlite3.Connection) -> list[Change]:
            existing = {row[0] for row in conn.execute("SELECT mac FROM vms")}
            changes = [
                Change(
                    ChangeEvent.UPDATED if vm.mac in existing else ChangeEvent.CREATED, vm.mac, vm
                )
                for vm in vms
            ]
            # Rows replace records with the same MAC, so two rows may swap addresses: the
            # rows are checked against the records outside the import and each other.
            importing = {vm.mac for vm in vms}
            others = [
                (mac, address, name)
                for mac, address, name in conn.execute("SELECT mac, ipv4, name_key FROM vms")
                if mac not in importing
            ]
            errors = import_errors(vms, others)
            if not errors:
                conn.executemany("DELETE FROM vms WHERE mac = ?", [(mac,) for mac in importing])
                for vm in vms:
                    self._write(conn, vm)
            if errors:
                raise ConflictRows(errors)
            return changes

        changes = await self._transaction(body)
        self._publish(changes)
