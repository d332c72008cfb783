"""Registry files are private: a real unprivileged local user (`nobody`, through setpriv)
can read none of the files the server and the CLI create: the database with its -wal and
-shm (which hold every hash and user-data while the server runs), the admin token, an
export, the DHCP files. The dnsmasq the server runs still reads its hosts file, as its own
user, after every change (a guest registered after it started gets its lease)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from metadata_server.dhcp.commands import DaemonError
from metadata_server.dhcp.managed import ManagedDnsmasq, unreachable_for
from metadata_server.store.sqlite import SQLiteStore
from tests.support.dhcp_client import get_lease, install_script
from tests.support.netns import BridgeNetwork, bridge_network
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools, root_fixture
from tests.support.server_process import ServerProcess, server_process

USER_DATA = "#!/bin/sh\necho private-user-data-5d1c\n"


@pytest.fixture
@root_fixture
def net() -> Iterator[BridgeNetwork]:
    need_root()
    need_tools("ip", "dnsmasq", "busybox", "setpriv")
    with bridge_network() as network:
        yield network


@pytest.fixture(params=["left-0755", "made-by-the-server"])
def open_base(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory every user may enter (as /var/lib is), holding a state directory an
    operator left 0755 (only the modes of what the server creates protect the files), or
    none (the server makes it under its umask 077, and dnsmasq must still get through)."""
    base = Path(tempfile.mkdtemp(prefix="ms-private-", dir="/tmp"))
    base.chmod(0o755)
    if request.param == "left-0755":
        (base / "state").mkdir(mode=0o755)
        (base / "state").chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *argv],
        capture_output=True,
        text=True,
        timeout=10,
    )


def config(base: Path) -> Path:
    lines = [
        f'db = "{base}/state/registry.db"',
        'bridge = "br0"',
        "[guest]",
        'listen = ["169.254.169.254:80"]',
        "[admin]",
        f'listen = "unix:{base}/admin.sock"',
        "[dhcp]",
        'daemon = "dnsmasq"',
        "manage = true",
        "debounce_ms = 50",
        "[[dhcp.subnets]]",
        'cidr = "198.18.0.0/24"',
        'gateway = "198.18.0.1"',
        'bridge = "br0"',
        "lease_time = 600",
    ]
    path = base / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def admin(
    server: ServerProcess, token: str, method: str, path: str, body: object = None
) -> tuple[int, object]:
    connector = aiohttp.UnixConnector(path=server.admin_url.removeprefix("unix:"))
    async with (
        aiohttp.ClientSession(
            connector=connector, headers={"Authorization": f"Bearer {token}"}
        ) as session,
        session.request(method, "http://admin" + path, json=body) as response,
    ):
        return response.status, await response.json()


async def wait_for_guests(server: ServerProcess, token: str, count: int) -> dict[str, object]:
    for _ in range(200):
        _, status = await admin(server, token, "GET", "/api/v1/dhcp/status")
        assert isinstance(status, dict)
        if status["ok"] and status["guests"] == count:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the DHCP files never held {count} guests: {status}")


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_nobody_reads_no_file_and_dnsmasq_still_reads_its_own(
    net: BridgeNetwork, open_base: Path, tmp_path: Path
) -> None:
    state = open_base / "state"
    db = state / "registry.db"
    with server_process(
        ["--config", str(config(open_base))], tmp_path / "server.log", prefix=net.dom0.argv()
    ) as server:
        token = (state / "admin-token").read_text().strip()
        await wait_for_guests(server, token, 0)
        # Registered after dnsmasq started: its reservation reaches dnsmasq by SIGHUP,
        # which dnsmasq handles as its own user, long after it dropped root.
        body = guest_body(
            1,
            ipv4={"address": "198.18.0.21", "prefix": 24, "gateway": "198.18.0.1"},
            password="Plain-Secret-91b2",
            password_hash=None,
            user_data=USER_DATA,
        )
        status, _ = await admin(server, token, "PUT", f"/api/v1/vms/{mac_of(1)}", body)
        assert status == 201
        dhcp = await wait_for_guests(server, token, 1)
        guest = net.add_guest(mac_of(1))
        lease = await asyncio.to_thread(
            get_lease, guest.ns, install_script(tmp_path), tmp_path / "lease"
        )
        assert lease["ip"] == "198.18.0.21"
        dnsmasq_uid = uid_of(int(str(dhcp["managed_pid"])))
        assert dnsmasq_uid == int(
            subprocess.run(["id", "-u", "dnsmasq"], capture_output=True, text=True).stdout
        )
        assert (state / "dhcp" / "dnsmasq-hosts").stat().st_uid == dnsmasq_uid

        export = subprocess.run(
            [
                sys.executable,
                "-m",
                "metadata_server",
                "db",
                "export",
                "--db",
                str(db),
                str(state / "export.ndjson"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert export.returncode == 0, export.stderr

        # What a local user was after: the WAL holds the user-data while the server runs.
        wal = db.with_name("registry.db-wal")
        assert b"private-user-data-5d1c" in wal.read_bytes() + db.read_bytes()
        files = [path for path in open_base.rglob("*") if path.is_file()]
        names = {str(path.relative_to(state)) for path in files if state in path.parents}
        assert names >= {
            "registry.db",
            "registry.db-wal",
            "registry.db-shm",
            "admin-token",
            "export.ndjson",
            "dhcp/dnsmasq.conf",
            "dhcp/dnsmasq-hosts",
            "dhcp/dnsmasq.leases",
            "signing-key.pem",
        }, names
        for path in files:
            if path == open_base / "config.toml":
                continue  # the test's own
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {mode:04o}"
            refused = as_nobody("cat", str(path))
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, path
        socket = open_base / "admin.sock"
        assert stat.S_IMODE(socket.stat().st_mode) == 0o600
        assert as_nobody("ls", str(state / "dhcp")).returncode != 0
        assert stat.S_IMODE((state / "dhcp").stat().st_mode) == 0o711
        assert stat.S_IMODE(state.stat().st_mode) in (0o755, 0o711)  # left, or made 0711
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_an_older_database_readable_by_others_is_made_private_on_open(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    previous = os.umask(0o022)
    try:
        keeper = sqlite3.connect(db)  # keeps -wal and -shm in place, as a crash would
        keeper.execute("PRAGMA journal_mode=WAL")
        keeper.execute("CREATE TABLE t (x)")
        keeper.execute("INSERT INTO t VALUES (1)")
        keeper.commit()
    finally:
        os.umask(previous)
    members = [db, db.with_name("registry.db-wal"), db.with_name("registry.db-shm")]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in members)

    async def open_and_close() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    try:
        asyncio.run(open_and_close())
    finally:
        keeper.close()
    assert [stat.S_IMODE(path.stat().st_mode) for path in members if path.exists()] == [
        0o600
    ] * len([path for path in members if path.exists()])
    assert db.exists()


def test_cli_commands_write_private_files_whatever_the_umask(tmp_path: Path) -> None:
    """`dhcp render --out` and `db migrate` run from a shell with umask 022."""
    db = tmp_path / "new" / "registry.db"
    settings = tmp_path / "config.toml"
    settings.write_text(
        f'db = "{db}"\n[dhcp]\ndaemon = "dnsmasq"\n'
        '[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\n'
    )

    def run(*argv: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "metadata_server", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=lambda: os.umask(0o022),
        )
        assert result.returncode == 0, result.stderr

    run("db", "migrate", "--config", str(settings))
    run("dhcp", "render", "--config", str(settings), "--out", str(tmp_path / "out"))
    written = [db, *sorted((tmp_path / "out").iterdir())]
    assert len(written) == 3
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_dnsmasq_that_could_not_reload_its_hosts_is_not_started(tmp_path: Path) -> None:
    """A DHCP directory below one dnsmasq's account cannot pass through: the server says
    which directory and what to do, rather than start a dnsmasq whose every later reload
    fails (guests registered after start would get "no address available")."""
    account = pwd.getpwnam("nobody")
    closed = tmp_path / "closed"  # tmp_path's parents are 0700 root's as well
    (closed / "dhcp").mkdir(parents=True)
    closed.chmod(0o700)
    blocked = unreachable_for(account, closed / "dhcp")
    assert blocked is not None and blocked in (closed, *closed.parents)
    dnsmasq = ManagedDnsmasq(closed / "dhcp", ["br0"])
    dnsmasq.account = account
    with pytest.raises(DaemonError, match=r"cannot pass through .*chmod o\+x"):
        dnsmasq._prepare_files()
    assert not (closed / "dhcp" / "dnsmasq.leases").exists()  # nothing written

    opened = Path(tempfile.mkdtemp(prefix="ms-open-", dir="/tmp"))
    try:
        opened.chmod(0o711)
        (opened / "dhcp").mkdir()
        assert unreachable_for(account, opened / "dhcp") is None
    finally:
        shutil.rmtree(opened, ignore_errors=True)
