"""A real, throw-away PostgreSQL server for the tests that need one.

`initdb` into a fresh directory under /tmp, started by `pg_ctl` with a unix socket in
that directory and no TCP listener (listen_addresses=''), password authentication
(scram-sha-256), fsync off. PostgreSQL refuses to run as root, so under root it runs as
the `postgres` system user (Debian's package creates it) through `runuser`; otherwise as
the current user. One server per test session, shared by every module that imports the
fixture; stopped and removed when the last of them is done.

Roles: the superuser `postgres`, and `mds`, which owns each database the tests create
and is what the servers under test connect as.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.requirements import need_tools

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "superuser-test-password"
USER = "mds"
PASSWORD = "mds-test-password"
PORT = 5432  # only names the socket file: there is no TCP listener
TIMEOUT = 60


def _bin_dir() -> Path | None:
    def version(path: Path) -> int:
        name = path.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version)
    return found[-1] if found else None


@dataclass
class PostgresServer:
    root: Path
    bin: Path
    run_as: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    # --- the server ----------------------------------------------------------------

    def _run(self, argv: list[str]) -> None:
        subprocess.run(
            [*self.run_as, *argv],
            cwd=self.root,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
        )

    def init(self) -> None:
        password_file = self.root / "superuser-password"
        password_file.write_text(SUPERUSER_PASSWORD + "\n")
        self._chown(password_file)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        password_file.unlink()

    def start(self) -> None:
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                f"-c port={PORT}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(TIMEOUT),
                "start",
            ]
        )

    def stop(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def running(self) -> bool:
        status = subprocess.run(
            [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TIMEOUT,
        )
        return status.returncode == 0

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server stopped for the block, and running again after it, whatever happens."""
        self.stop()
        try:
            yield
        finally:
            if not self.running():
                self.start()

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, user=SUPERUSER)

    # --- connecting ----------------------------------------------------------------

    def url(self, database: str, *, user: str = USER, password: str = PASSWORD) -> str:
        return (
            f"postgresql://{user}:{quote(password, safe='')}@/{database}"
            f"?host={self.socket_dir}&port={PORT}"
        )

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url(database, user=SUPERUSER, password=SUPERUSER_PASSWORD)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` as the superuser; returns psql's unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(PORT),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            env={**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD},
            check=True,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        return result.stdout.strip()

    def create_database(self) -> str:
        """A new, empty database owned by `mds`; returns its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def set_login(self, allowed: bool, *, user: str = USER) -> None:
        self.psql(f"ALTER ROLE {user} {'LOGIN' if allowed else 'NOLOGIN'}")

    def disconnect(self, *, user: str = USER) -> None:
        """End every session of `user`, as a network cut or a failover would."""
        self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608 (a test role's name)
            f"WHERE usename = '{user}'"
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _make_server() -> PostgresServer:
    bin_dir = _bin_dir()
    if bin_dir is None:
        need_tools("initdb", "pg_ctl", "psql")  # skips, or fails under CI
        raise AssertionError("unreachable")
    need_tools(*(str(bin_dir / tool) for tool in ("initdb", "pg_ctl", "psql")))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            pytest.skip("PostgreSQL refuses root and there is no postgres user")
        run_as = [need_tools("runuser")["runuser"], "-u", SUPERUSER, "--"]
    root = Path(tempfile.mkdtemp(prefix="mds-pg-", dir="/tmp"))
    server = PostgresServer(root=root, bin=bin_dir, run_as=run_as)
    try:
        server._chown(root)
        server.init()
        server.start()
        server.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    except BaseException:
        server.remove()
        raise
    return server


_shared: PostgresServer | None = None
_users = 0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (import this fixture into a test module).

    Each importing module gets its own copy of this fixture, so the server itself is
    shared through a count of users and removed when the last one finishes.
    """
    global _shared, _users
    if _shared is None:
        _shared = _make_server()
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.remove()
            _shared = None
