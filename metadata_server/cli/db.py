"""`metadata-server db ...`: work on the registry database named by `--db` directly.

`migrate` brings its schema up to date (`serve` does so on start too). `export` and
`import` move a registry between backends (SQLite ⇄ PostgreSQL) or machines: the export
holds every record in full, password hashes and user-data included, so it is written
mode 0600 and never over an existing file; an import is all of it or none of it.

These commands bypass the admin API (no token, no running server needed); they must
only ever be given to the operator, like the database itself. Messages name a database
by its redacted URL, never with its password.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metadata_server.cli.client import CommandError
from metadata_server.config import Settings
from metadata_server.errors import ConflictRows, InvalidRows
from metadata_server.model import VM
from metadata_server.store import Store, open_store
from metadata_server.store.dsn import is_postgres_url, redact
from metadata_server.store.migrations import SchemaState
from metadata_server.store.transfer import export_lines, read_export

SettingsFrom = Callable[..., Settings]


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    def new(name: str, help_text: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        add_common(p)
        p.add_argument("--db", help="registry: an SQLite path or a postgresql:// URL")
        p.set_defaults(handler=handler)
        return p

    new("migrate", "bring the registry's schema up to date (serve also does this)", _migrate)

    p = new(
        "export",
        "write every guest record in full (password hashes, user-data) as NDJSON, "
        "mode 0600: for moving a registry",
        _export,
    )
    p.add_argument("file", help="a new file (never overwritten), or - for stdout")

    p = new("import", "load an export into the registry: all of it or nothing", _import)
    p.add_argument("file", help="a file written by `db export`, or - for stdin")
    p.add_argument(
        "--merge",
        action="store_true",
        help="allow a registry that already has guests (records are created or replaced by MAC)",
    )


def _name(url: str) -> str:
    return redact(url) if is_postgres_url(url) else url


async def _opened(url: str) -> Store:
    store = open_store(url, follow_changes=False)
    await store.open()
    return store


# --- migrate ------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, settings_from: SettingsFrom) -> int:
    url = settings_from(args, {"db": args.db}).db

    async def run() -> SchemaState | None:
        store = await _opened(url)
        await store.close()
        schema = getattr(store, "schema", None)
        return schema if isinstance(schema, SchemaState) else None

    schema = asyncio.run(run())
    if schema is None:
        print(f"{_name(url)}: schema up to date")
    elif schema.migrated:
        print(f"{_name(url)}: migrated from schema version {schema.before} to {schema.after}")
    else:
        print(f"{_name(url)}: schema version {schema.after}, up to date")
    return 0


# --- export -------------------------------------------------------------------------


def _write_private(path: Path, lines: list[str]) -> None:
    """Create `path` (refusing an existing one) mode 0600 and write `lines` to it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} exists; export to a new file") from None
    except OSError as exc:
        raise CommandError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {exc.strerror}") from None


def _export(args: argparse.Namespace, settings_from: SettingsFrom) -> int:
    url = settings_from(args, {"db": args.db}).db

    async def run() -> list[VM]:
        store = await _opened(url)
        try:
            return await store.list()
        finally:
            await store.close()

    vms = asyncio.run(run())
    lines = list(export_lines(vms))
    if args.file == "-":
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        target = "standard output"
    else:
        _write_private(Path(args.file), lines)
        target = f"{args.file} (mode 0600)"
    print(
        f"exported {len(vms)} guests from {_name(url)} to {target}; it holds password hashes "
        "and user-data: keep it private, delete it once imported",
        file=sys.stderr,
    )
    return 0


# --- import -------------------------------------------------------------------------


def _read_lines(file: str) -> list[str]:
    try:
        if file == "-":
            return sys.stdin.read().splitlines()
        return Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {file}: {exc}") from None


def _import(args: argparse.Namespace, settings_from: SettingsFrom) -> int:
    url = settings_from(args, {"db": args.db}).db
    try:
        vms, line_numbers = read_export(_read_lines(args.file))
    except InvalidRows as exc:
        raise CommandError(
            f"{exc.detail} (from {args.file})",
            [f"line {row.index}: {row.field or '-'}: {row.reason}" for row in exc.rows],
        ) from None

    async def run() -> None:
        store = await _opened(url)
        try:
            if not args.merge:
                present = len(await store.list())
                if present:
                    raise CommandError(
                        f"{_name(url)} already holds {present} guests; nothing was imported "
                        "(--merge creates or replaces records by MAC)"
                    )
            await store.import_all(vms)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except ConflictRows as exc:
        raise CommandError(
            exc.detail,
            [
                f"line {line_numbers[row.index]}: {row.field or '-'}: {row.reason}"
                for row in exc.rows
            ],
        ) from None
    print(f"imported {len(vms)} guests into {_name(url)}")
    return 0
