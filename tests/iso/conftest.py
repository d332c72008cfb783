"""Fixtures for the ISO fallback: the stand-in xenstored, the real xenstore-utils, the
xl stand-in, and a `world` that wires a Provisioner to them and to a real service;
everything they create (sockets, temp dirs, ISO files, loop devices, processes, running
flows) is removed at the end, also when the test fails."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.cloud.options import CloudOptions
from metadata_server.documents import DocumentOptions
from metadata_server.iso.directory import IsoDirectory
from metadata_server.iso.provision import Provisioner, ProvisionSettings
from metadata_server.model import VM, State
from metadata_server.registry import Registry
from metadata_server.xen.host import VIF_BACKENDS, XenHost, XenSettings
from tests.support.xen_standins import (
    GUESTS,
    TOOL_TIMEOUT,
    ServerThread,
    ok,
    tool,
    xl_standin_command,
)


@dataclass
class World:
    """Everything one ISO provisioning test needs, and what it must find gone afterwards."""

    xenstored: ServerThread
    xl_state: Path
    iso_dir: Path
    service: MetadataService
    registry: Registry
    host: XenHost
    provisioner: Provisioner

    def vif(self, domid: int, mac: str, devid: int = 0) -> None:
        ok(self.xenstored, "xenstore-write", f"{VIF_BACKENDS}/{domid}/{devid}/mac", mac)

    def signal_exists(self, domid: int) -> bool:
        path = f"/local/domain/{domid}/data/metadata-init"
        return tool(self.xenstored, "xenstore-exists", path).returncode == 0

    def xl_calls(self) -> list[list[str]]:
        log = self.xl_state / "xl-argv.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    async def attached(self, domid: int = 5, timeout: float = 10) -> str:
        """The loop device of the ISO attached to `domid`, once the flow attached it."""
        record = self.xl_state / "devices" / str(domid) / "xvdd"
        deadline = time.monotonic() + timeout
        while True:
            device = record.read_text().strip() if record.exists() else ""
            if device:  # the stand-in creates the file, then writes it
                return device
            if time.monotonic() > deadline:
                raise AssertionError(f"no ISO was attached to domain {domid} in {timeout} s")
            await asyncio.sleep(0.02)

    async def until(self, mac: str, state: State, timeout: float = 10) -> VM:
        """The record once it reaches `state` (AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        vm = await self.registry.get(mac)
        while vm.state is not state:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{mac} is {vm.state}, not {state}, after {timeout} s")
            vm = await self.registry.wait_for_state(mac, unlike=vm.state, timeout=left)
        return vm

    def loop_devices(self) -> list[str]:
        """Loop devices backed by a file in the ISO directory (deleted or not)."""
        out = subprocess.run(
            ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE"],
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
        ).stdout
        devices = json.loads(out)["loopdevices"] if out.strip() else []
        return [
            entry["name"]
            for entry in devices
            if (entry.get("back-file") or "").startswith(str(self.iso_dir) + "/")
        ]

    def assert_nothing_left(self, *domids: int) -> None:
        if self.iso_dir.exists():
            assert sorted(os.listdir(self.iso_dir)) == [], "ISO files are left"
        for domid in domids or GUESTS:
            assert not self.signal_exists(domid), f"signal keys of domain {domid} are left"
        assert list((self.xl_state / "devices").glob("*/*")) == []
        assert self.loop_devices() == []
        watchers = subprocess.run(
            ["pgrep", "-f", "xenstore-watch /local/domain/.*/data/metadata-init"],
            capture_output=True,
            timeout=TOOL_TIMEOUT,
        )
        assert watchers.stdout == b"", "a xenstore-watch is left running"


def make_provisioner(
    service: MetadataService,
    xenstored: ServerThread,
    xl_command: tuple[str, ...],
    iso_dir: Path,
    *,
    command_timeout: float = 10,
) -> tuple[XenHost, Provisioner]:
    assert service.registry is not None
    host = XenHost(
        XenSettings(
            xl_command=xl_command,
            xenstored_path=str(xenstored.socket()),
            command_timeout=command_timeout,
        )
    )
    settings = service.settings
    provisioner = Provisioner(
        service.registry,
        host,
        IsoDirectory(iso_dir),
        DocumentOptions(
            default_domain=settings.domain,
            public_url=settings.public_url,
            serve_secrets_once=settings.guest.serve_secrets_once,
        ),
        CloudOptions(),
        ProvisionSettings(default_timeout=10),
    )
    return host, provisioner


@pytest.fixture
async def world(
    xenstored: ServerThread,
    xl_state: Path,
    short_tmp: Path,
    service: MetadataService,
    loop_devices: None,
) -> AsyncIterator[World]:
    """Guest domains 5 and 6 in the stand-in xenstored, the xl stand-in with real loop
    devices, a service with its registry, and a Provisioner whose ISO directory is
    `<short tmp>/iso`. Flows still running at the end are stopped (and clean up)."""
    assert service.registry is not None
    iso_dir = short_tmp / "iso"
    host, provisioner = make_provisioner(service, xenstored, xl_standin_command(xl_state), iso_dir)
    try:
        yield World(xenstored, xl_state, iso_dir, service, service.registry, host, provisioner)
    finally:
        await provisioner.close()
