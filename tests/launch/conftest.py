"""What launch tests share: a real SQLite registry, the xl stand-in for domain commands
(tests/support/xl_domains.py) with its state, a prepared-looking qcow2 master made with
the real qemu-img (its record written as `image prepare` writes it), a pvgrub2 file,
and `leftovers()`: what a launch left anywhere (registrations, launch directories,
domains)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metadata_server.dhcp.subnets import Subnet
from metadata_server.images.record import (
    MasterRecord,
    digest_file,
    image_id_for,
    record_path,
    write_record,
)
from metadata_server.launch.launcher import Launcher, LaunchSettings
from metadata_server.launch.xl import Xl
from metadata_server.registry import Registry
from metadata_server.store.sqlite import SQLiteStore
from tests.support.requirements import need_tools

XL_DOMAINS = Path(__file__).resolve().parent.parent / "support" / "xl_domains.py"
SUBNET = Subnet(
    cidr=ipaddress.IPv4Network("198.18.0.0/29"),
    gateway=ipaddress.IPv4Address("198.18.0.1"),
    bridge="xenbr0",
)


@dataclass
class XlState:
    directory: Path

    def calls(self) -> list[list[str]]:
        log = self.directory / "calls.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[str]:
        return [call[0] for call in self.calls()]

    def domains(self) -> list[str]:
        found = self.directory / "domains"
        return sorted(p.name for p in found.iterdir()) if found.exists() else []

    def fail(self, command: str, text: str = "") -> None:
        (self.directory / f"fail-{command}").write_text(text)

    def slow(self, command: str, seconds: float) -> None:
        (self.directory / f"sleep-{command}").write_text(str(seconds))


@pytest.fixture
def xl_state(tmp_path: Path) -> XlState:
    directory = tmp_path / "xl"
    directory.mkdir()
    return XlState(directory)


@pytest.fixture
def xl(xl_state: XlState) -> Xl:
    return Xl(command=(sys.executable, str(XL_DOMAINS), str(xl_state.directory)), timeout=10)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = SQLiteStore(tmp_path / "registry.db")
    await store.open()
    try:
        yield Registry(store, clock=time.time, random_bytes=os.urandom, password_rounds=1000)
    finally:
        await store.close()


def make_master(directory: Path, *, fmt: str = "qcow2") -> Path:
    """A qcow2 master with its record, as `image prepare` leaves it (0444 both)."""
    qemu_img = need_tools("qemu-img")["qemu-img"]
    master = directory / "master.qcow2"
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", str(master), "16M"], check=True, timeout=30
    )
    master.chmod(0o444)
    sha = digest_file(master)
    info = master.stat()
    record = MasterRecord(
        image_id=image_id_for(sha),
        sha256=sha,
        format=fmt,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        virtual_size=16 << 20,
        source="test",
        source_format="raw",
        root="the whole disk (ext4)",
        init="systemd",
        verify_key=False,
        prepared_at="2026-12-02T00:00:00Z",
        prepared_by="metadata-server test",
        changes=(),
    )
    write_record(record_path(master), record)
    return master


@pytest.fixture
def master(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    return make_master(images)


@pytest.fixture
def pvgrub(tmp_path: Path) -> Path:
    path = tmp_path / "grub-x86_64-xen.bin"
    path.write_bytes(b"pvgrub2 stand-in")
    return path


@pytest.fixture
def launch_settings(tmp_path: Path, pvgrub: Path) -> LaunchSettings:
    return LaunchSettings(
        directory=tmp_path / "state" / "launched",
        subnets=(SUBNET,),
        dom0_addresses=frozenset({"169.254.169.254", "198.18.0.1", "198.18.0.2"}),
        pvgrub=pvgrub,
    )


@pytest.fixture
def make_launcher(
    registry: Registry, launch_settings: LaunchSettings, xl: Xl
) -> Callable[..., Launcher]:
    (launch_settings.directory.parent).mkdir(parents=True, exist_ok=True)

    def make(**options: Any) -> Launcher:
        async def no_vifs() -> set[str]:
            return set()

        options.setdefault("random_bytes", os.urandom)
        options.setdefault("running_macs", no_vifs)
        return Launcher(registry, options.pop("settings", launch_settings), xl, **options)

    return make


@pytest.fixture
def leftovers(
    registry: Registry, launch_settings: LaunchSettings, xl_state: XlState
) -> Callable[[], Any]:
    async def found() -> dict[str, Any]:
        directory = launch_settings.directory
        return {
            "registrations": [vm.spec.hostname for vm in await registry.list()],
            "launch files": sorted(str(p) for p in directory.rglob("*"))
            if directory.exists()
            else [],
            "domains": xl_state.domains(),
        }

    return found


NOTHING: dict[str, list[str]] = {"registrations": [], "launch files": [], "domains": []}
