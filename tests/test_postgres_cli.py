"""`metadata-server db migrate|export|import` against SQLite and a real PostgreSQL, and
the one-line errors at start for bad connections (`db migrate` and `serve`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from metadata_server.cli import db
from metadata_server.cli import main as cli_main
from metadata_server.model import VM, State
from metadata_server.store import open_store
from tests.support.postgres import (  # noqa: F401  (postgres_server is a fixture)
    PASSWORD,
    PostgresServer,
    postgres_server,
)
from tests.support.records import SAMPLE_HASH
from tests.support.service import ADMIN_TOKEN
from tests.test_store_contract import make_vm


@pytest.fixture(autouse=True)
def db_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until cli/main.py wires `db` in, add it here exactly as it is to be wired."""
    original = cli_main.build_parser
    parser = original()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "db" in commands.choices:
        return

    def build() -> argparse.ArgumentParser:
        parser = original()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        p = commands.add_parser("db", help="the registry database itself: migrate, export, import")
        db_commands = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
        db.add_parsers(db_commands, cli_main._add_common)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", build)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["db", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def fill(url: str, vms: Sequence[VM]) -> None:
    async def go() -> None:
        store = open_store(url, follow_changes=False)
        await store.open()
        try:
            await store.import_all(vms)
        finally:
            await store.close()

    asyncio.run(go())


def stored(url: str) -> list[VM]:
    async def go() -> list[VM]:
        store = open_store(url, follow_changes=False)
        await store.open()
        try:
            return await store.list()
        finally:
            await store.close()

    return asyncio.run(go())


def sample() -> list[VM]:
    return [
        make_vm(1, user_data="#!/bin/sh\necho one\n", metadata={"role": "web"}, host="dom0-a"),
        make_vm(2, host="dom0-b").with_state(State.CONFIGURED, 2000.0, "ok"),
        make_vm(3, domain="b.example"),
    ]


def test_export_import_moves_a_registry_both_ways(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    source = str(tmp_path / "source.db")
    fill(source, sample())
    export = tmp_path / "registry.ndjson"
    code, _, err = run(capsys, "export", "--db", source, str(export))
    assert code == 0, err
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    assert "password hashes" in err
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["count"] == 3 and len(lines) == 4
    assert SAMPLE_HASH in lines[1] and "echo one" in lines[1], "records are exported in full"

    postgres = postgres_server.url(postgres_server.create_database())
    code, out, err = run(capsys, "import", "--db", postgres, str(export))
    assert code == 0, err
    assert "imported 3 guests" in out and PASSWORD not in out
    assert stored(postgres) == sample()

    back = tmp_path / "back.ndjson"
    assert run(capsys, "export", "--db", postgres, str(back))[0] == 0
    assert back.read_text() == export.read_text()
    target = str(tmp_path / "target.db")
    assert run(capsys, "import", "--db", target, str(back))[0] == 0
    assert stored(target) == sample()


def test_export_never_overwrites(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    fill(source, sample())
    existing = tmp_path / "existing.ndjson"
    existing.write_text("keep me\n")
    code, _, err = run(capsys, "export", "--db", source, str(existing))
    assert code == 1 and "exists" in err
    assert existing.read_text() == "keep me\n"


def _export_of(vms: Sequence[VM], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    source = str(tmp_path / f"source-{len(list(tmp_path.iterdir()))}.db")
    fill(source, vms)
    path = tmp_path / f"export-{len(list(tmp_path.iterdir()))}.ndjson"
    assert run(capsys, "export", "--db", source, str(path))[0] == 0
    return path


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda lines: lines[:-1], "announces 3 records but holds 2"),
        (lambda lines: [*lines[:2], lines[2].replace("guest2", "guest1"), lines[3]], "line 3"),
        (lambda lines: [*lines[:2], "{}", lines[3]], "line 3"),
        (lambda lines: ['{"hostname": "x"}', *lines[1:]], "not a registry export"),
    ],
    ids=["cut-short", "clashing-rows", "bad-record", "not-an-export"],
)
def test_a_bad_import_changes_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
    damage: object,
    expected: str,
) -> None:
    path = _export_of(sample(), tmp_path, capsys)
    path.write_text("\n".join(damage(path.read_text().splitlines())) + "\n")  # type: ignore[operator]
    target = postgres_server.url(postgres_server.create_database())
    code, _, err = run(capsys, "import", "--db", target, str(path))
    assert code == 1
    assert expected in err
    assert stored(target) == []


def test_import_into_a_registry_with_guests_needs_merge(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _export_of(sample(), tmp_path, capsys)
    target = str(tmp_path / "target.db")
    fill(target, [make_vm(9)])
    code, _, err = run(capsys, "import", "--db", target, str(path))
    assert code == 1 and "already holds 1 guests" in err
    assert len(stored(target)) == 1
    assert run(capsys, "import", "--db", target, "--merge", str(path))[0] == 0
    assert len(stored(target)) == 4


def test_migrate_reports_and_refuses_a_newer_schema(
    capsys: pytest.CaptureFixture[str],
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    database = postgres_server.create_database()
    url = postgres_server.url(database)
    code, out, _ = run(capsys, "migrate", "--db", url)
    assert code == 0 and "migrated from schema version 0 to 1" in out
    assert PASSWORD not in out and "mds:***@" in out
    code, out, _ = run(capsys, "migrate", "--db", url)
    assert code == 0 and "up to date" in out
    postgres_server.psql("UPDATE schema_version SET version = 7", database)
    code, _, err = run(capsys, "migrate", "--db", url)
    assert code == 1
    assert err.count("\n") == 1 and "schema version 7" in err and PASSWORD not in err
    assert postgres_server.psql("SELECT version FROM schema_version", database) == "7"


def test_serve_with_wrong_credentials_stops_with_one_line(
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = postgres_server.url(postgres_server.create_database(), password="not-the-password")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
    env["METADATA_SERVER_ADMIN_TOKEN"] = ADMIN_TOKEN
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "metadata_server",
            "serve",
            "--db",
            url,
            "--guest-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "password authentication failed" in lines[0]
    assert "not-the-password" not in result.stderr
