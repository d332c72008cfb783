"""The PostgreSQL registry's schema, its numbered migrations, and applying them.

Every row carries `updated_seq`, taken from one sequence by each write transaction
while it holds the registry's write lock, so sequence order is commit order: a server
that has seen every row up to N has missed exactly the rows above N. `last_event` keeps
the kind of the last change, so other servers can report it faithfully.

Runs on a connection it is given; it does not connect. Migration takes an advisory
lock, so servers starting together migrate once, one after the other.
"""

from __future__ import annotations

import asyncpg

from metadata_server.store.migrations import (
    READ_VERSION,
    VERSION_TABLE_DDL,
    Migration,
    SchemaState,
    latest,
    plan,
    set_version_statements,
)

# Advisory lock keys (per database): one for migrations, one that every write takes.
MIGRATION_LOCK = 0x6D64_735F_6D69_6772  # "mds_migr"
WRITE_LOCK = 0x6D64_735F_7772_6974  # "mds_writ"
CHANGE_CHANNEL = "metadata_server_vms"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "guests keyed by MAC; address and hostname+domain unique; change sequence",
        (
            "CREATE SEQUENCE IF NOT EXISTS vm_change_seq",
            """CREATE TABLE IF NOT EXISTS vms (
                mac TEXT PRIMARY KEY,
                ipv4 TEXT NOT NULL CONSTRAINT vms_ipv4_unique UNIQUE,
                name_key TEXT NOT NULL CONSTRAINT vms_name_key_unique UNIQUE,
                state TEXT NOT NULL,
                host TEXT,
                last_event TEXT NOT NULL,
                updated_seq BIGINT NOT NULL,
                record TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS vms_state ON vms (state)",
            "CREATE INDEX IF NOT EXISTS vms_host ON vms (host)",
            "CREATE INDEX IF NOT EXISTS vms_updated_seq ON vms (updated_seq)",
        ),
    ),
)


async def migrate(conn: asyncpg.Connection, *, database: str) -> SchemaState:
    """Bring the schema up to date in one transaction; refuse a newer one untouched.

    `database` names it in messages (redacted). Raises ConfigError for a newer schema.
    """
    migrations = MIGRATIONS
    target = latest(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        # Only create the version table when missing: CREATE ... IF NOT EXISTS needs the
        # CREATE privilege even when the table is there, and a newer schema must stay
        # untouched.
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            await conn.execute(VERSION_TABLE_DDL)
        current = await conn.fetchval(READ_VERSION)
        steps = plan(migrations, current, database=database)
        for step in steps:
            for statement in step.statements:
                await conn.execute(statement)
        if steps:
            for statement in set_version_statements(target):
                await conn.execute(statement)
    return SchemaState(before=current or 0, after=target)
