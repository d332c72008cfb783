"""A full disk and a read-only filesystem under the registry, for real (root: a small
tmpfs filled up; an ext4 image on a loop device that the kernel remounts read-only after
an error, as `errors=remount-ro` does in life). The admin API answers 507 or 503 with a
JSON error and changes nothing, `/healthz` says `degraded` and why, a guest's status
report gets a JSON error, guests are still served from memory, and the database is whole
afterwards. A remount by hand is no way to test this: the kernel refuses to make a
filesystem read-only while the server holds files open for writing, and root ignores
file modes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metadata_server.app import MetadataService
from metadata_server.store.sqlite import SQLiteStore
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_root, need_tools
from tests.support.service import ADMIN_TOKEN, Api, make_settings
from tests.test_guest_api import client_from, loopback_guest

BIG = "#!/bin/sh\n" + "x" * 60_000  # a change that needs new pages in the WAL


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir()
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _run("umount", "--lazy", str(path))


@contextlib.contextmanager
def ext4_image(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 16 MB ext4 filesystem on a loop device: (its mount point, its loop device's name)."""
    image = tmp_path / "disk.img"
    with image.open("wb") as handle:
        handle.truncate(16 << 20)
    _run("mkfs.ext4", "-q", "-F", str(image))
    device = _run("losetup", "--find", "--show", str(image))
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        _run("mount", "-o", "errors=remount-ro", device, str(mount))
        try:
            yield mount, Path(device).name
        finally:
            _run("umount", "--lazy", str(mount))
    finally:
        _run("losetup", "--detach", device)


def fill(directory: Path) -> Path:
    """Write zeros into `directory/filler` until the filesystem has no room left."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    for size in (4096, 512, 1):  # the last partial blocks too
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
            while True:
                handle.write(b"\0" * size)
    return filler


def remount_read_only(device: str) -> None:
    """What ext4 does after an I/O error with errors=remount-ro: read-only from now on,
    whatever is open."""
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("metadata-server test\n")


def rows_of(db: Path) -> list[tuple[str, str]]:
    """The stored records and the integrity check, read by a connection of our own."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [(mac, record) for mac, record in conn.execute("SELECT mac, record FROM vms")]
    finally:
        conn.close()


# Every admin change, on a registry with guests 1 (on 127.0.0.1) and 2.
WRITES: list[tuple[str, str, Any]] = [
    ("PUT", f"/api/v1/vms/{mac_of(3)}", guest_body(3, user_data=BIG)),
    ("PUT", f"/api/v1/vms/{mac_of(2)}", guest_body(2, user_data=BIG)),
    ("PATCH", f"/api/v1/vms/{mac_of(2)}", {"user_data": BIG}),
    (
        "POST",
        "/api/v1/vms/import",
        [{"mac": mac_of(n), **guest_body(n, user_data=BIG[:30_000])} for n in range(4, 9)],
    ),
    ("DELETE", f"/api/v1/vms/{mac_of(2)}", None),
    ("POST", f"/api/v1/vms/{mac_of(2)}/rearm", None),
    ("POST", f"/api/v1/vms/{mac_of(2)}/lease", {"address": "198.18.0.12"}),
]


async def start_on(directory: Path, tmp_path: Path) -> MetadataService:
    service = MetadataService(make_settings(tmp_path, db=str(directory / "registry.db")))
    await service.start()
    assert service.registry is not None
    await service.registry.put(mac_of(1), loopback_guest(1, "127.0.0.1"))
    await service.registry.put(mac_of(2), guest_body(2))
    return service


async def check_refused(
    service: MetadataService, db: Path, status: int, code: str, words: str
) -> None:
    """Every change is refused with `status` and a JSON error; nothing changes; the
    health check and a guest's status report say so too; guests are still served."""
    assert service.admin_address is not None
    before = rows_of(db)
    async with aiohttp.ClientSession() as session:
        admin = Api(session, service.admin_address.url, ADMIN_TOKEN)
        for method, path, body in WRITES:
            got, answer = await admin.call(method, path, json=body)
            assert got == status, (method, path, got, answer)
            assert answer["error"] == code and words in answer["detail"], answer
            assert "nothing was changed" in answer["detail"]
        got, listing = await admin.get("/api/v1/vms")
        assert got == 200 and [vm["mac"] for vm in listing["vms"]] == [mac_of(1), mac_of(2)]
        got, health = await admin.get("/healthz")
        assert got == 200 and health["status"] == "degraded"
        assert health["store"]["healthy"] is False and words in health["store"]["last_error"]
        assert health["store"]["since"] is not None
    async with client_from(service, "127.0.0.1") as session:
        guest = Api(session, service.guest_addresses[0].url, None)
        got, document = await guest.get("/v1/config")
        assert got == 200 and document["hostname"] == "guest1", "served from memory"
        async with session.post(
            service.guest_addresses[0].url + "/v1/status", json={"state": "configured"}
        ) as response:
            assert response.status == status
            assert response.content_type == "application/json"
            assert (await response.json())["error"] == code
    assert rows_of(db) == before, "nothing half-written"


async def wait_healthy(admin: Api, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, health = await admin.get("/healthz")
        if health["status"] == "ok" or time.monotonic() > deadline:
            return dict(health)
        await asyncio.sleep(0.1)


@pytest.mark.root
async def test_full_disk_is_507_changes_nothing_and_recovers(tmp_path: Path) -> None:
    need_root()
    with small_tmpfs(tmp_path / "small") as directory:
        service = await start_on(directory, tmp_path)
        try:
            store = service.store
            assert isinstance(store, SQLiteStore)
            store.probe_interval = 0.2
            filler = fill(directory)
            await check_refused(service, directory / "registry.db", 507, "storage_full", "full")

            # Room again: the probe write notices without any change from outside, and
            # the same change now goes through.
            filler.unlink()
            assert service.admin_address is not None
            async with aiohttp.ClientSession() as session:
                admin = Api(session, service.admin_address.url, ADMIN_TOKEN)
                health = await wait_healthy(admin)
                assert health["status"] == "ok" and health["store"]["last_error"] is None
                method, path, body = WRITES[0]
                got, _ = await admin.call(method, path, json=body)
                assert got == 201
        finally:
            await service.stop()


@pytest.mark.root
async def test_read_only_filesystem_is_503_and_changes_nothing(tmp_path: Path) -> None:
    need_root()
    need_tools("mkfs.ext4", "losetup")
    with ext4_image(tmp_path) as (directory, device):
        service = await start_on(directory, tmp_path)
        try:
            remount_read_only(device)
            await check_refused(
                service, directory / "registry.db", 503, "unavailable", "cannot be used"
            )
        finally:
            await service.stop()


@pytest.mark.root
def test_serve_on_a_read_only_filesystem_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    need_root()
    need_tools("mkfs.ext4", "losetup")
    with ext4_image(tmp_path) as (directory, device):
        remount_read_only(device)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "metadata_server",
                "serve",
                "--db",
                str(directory / "registry.db"),
            ],
            env={"METADATA_SERVER_ADMIN_TOKEN": "t" * 32, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "registry.db" in lines[0] and "Read-only" in lines[0], lines


async def test_an_unforeseen_failure_is_a_json_500_for_the_guest(tmp_path: Path) -> None:
    """The guest routes map every error themselves (no app middleware on the hot path):
    one they did not foresee, here a store that went away, is still a JSON error."""
    service = await start_on(tmp_path, tmp_path)
    try:
        await service.store.close()
        async with (
            client_from(service, "127.0.0.1") as session,
            session.post(
                service.guest_addresses[0].url + "/v1/status", json={"state": "configured"}
            ) as response,
        ):
            assert response.status == 500 and response.content_type == "application/json"
            body = await response.json()
            assert body["error"] == "internal" and "server log" in body["detail"]
    finally:
        await service.stop()
