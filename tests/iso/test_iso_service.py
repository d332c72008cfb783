"""The `iso.*` settings and the ISO fallback as a part of the server (IsoFallback):
leftovers removed at start, flows cut short and cleaned up at stop, no Xen command at
all on a host where the fallback never ran."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from metadata_server.cloud.options import CloudOptions
from metadata_server.errors import ConfigError, Unavailable
from metadata_server.iso.directory import IsoDirectory
from metadata_server.iso.layout import Layout
from metadata_server.iso.provision import Provisioner
from metadata_server.iso.service import IsoFallback
from metadata_server.iso.settings import ISO_SETTINGS, IsoSettings, iso_settings
from metadata_server.model import State
from metadata_server.setting import Values
from metadata_server.xen.host import XenHost, XenSettings
from tests.iso.conftest import World
from tests.support.records import guest_body, mac_of
from tests.support.xen_standins import xl_standin_command

DEFAULTS: dict[str, Any] = {setting.path: setting.default for setting in ISO_SETTINGS}


def values(overrides: dict[str, Any]) -> Values:
    return Values(ISO_SETTINGS, {**DEFAULTS, **overrides})


def test_defaults() -> None:
    settings = iso_settings(values({}), Path("/var/lib/metadata-server"))
    assert settings.directory == Path("/var/lib/metadata-server/iso")
    assert settings.layout is Layout.NOCLOUD and settings.timeout == 300
    assert settings.xen.xl_command == ("xl",) and settings.xen.vdev == "xvdd"
    assert settings.auto is None
    auto = iso_settings(values({"iso.auto": True}), Path("/x")).auto
    assert auto is not None and (auto.after, auto.interval, auto.parallel) == (120, 5, 4)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"iso.layout": "udf"}, "layout must be one of"),
        ({"iso.timeout": 0}, "iso.timeout must be a positive number"),
        ({"iso.timeout": 7200}, "iso.timeout must be at most 3600"),
        ({"iso.xl_command": []}, "xl_command must name a program"),
        ({"iso.vdev": "../sda"}, "not a virtual device name"),
        ({"iso.command_timeout": -1}, "iso.command_timeout must be a positive"),
        ({"iso.auto": True, "iso.auto_after": -1}, "iso.auto_after must be"),
        ({"iso.auto": True, "iso.auto_interval": 0}, "iso.auto_interval must be"),
        ({"iso.auto": True, "iso.auto_parallel": 0}, "iso.auto_parallel must be"),
        ({"iso.parallel_commands": 0}, "iso.parallel_commands: .* must be at least 1"),
    ],
    ids=[
        "layout",
        "timeout-zero",
        "timeout-long",
        "no-xl",
        "vdev",
        "command-timeout",
        "auto-after",
        "auto-interval",
        "auto-parallel",
        "parallel-commands",
    ],
)
def test_bad_settings(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        iso_settings(values(overrides), Path("/x"))


def service_for(world: World, directory: Path, **overrides: Any) -> IsoFallback:
    merged = {
        **DEFAULTS,
        "iso.directory": str(directory),
        "iso.xl_command": list(xl_standin_command(world.xl_state)),
        "iso.xenstored_path": str(world.xenstored.socket()),
        "iso.command_timeout": 10.0,
        **overrides,
    }
    settings: IsoSettings = iso_settings(Values(ISO_SETTINGS, merged), Path("/unused"))
    return IsoFallback(settings, world.registry, world.provisioner.documents, CloudOptions())


async def test_start_cleans_up_and_stop_cuts_flows_short(world: World) -> None:
    mac = mac_of(1)
    await world.registry.put(mac, guest_body(1))
    world.vif(5, mac)
    IsoDirectory(world.iso_dir).write(5, mac, b"\0")  # a crashed run's ISO
    await world.host.prepare_signal(6)  # and its keys
    fallback = service_for(world, world.iso_dir, **{"iso.auto": True})
    await fallback.start()
    try:
        assert list(world.iso_dir.iterdir()) == []
        assert not world.signal_exists(6)
        assert fallback.auto is not None and fallback.auto.waiting == {mac: None}
        flow = asyncio.create_task(fallback.provisioner.provision(mac))
        await world.attached(5)
    finally:
        await fallback.stop()
    with pytest.raises(Unavailable, match="shut down"):
        await flow
    assert (await world.registry.get(mac)).state is State.FAILED
    world.assert_nothing_left()


async def test_no_xen_command_where_the_fallback_never_ran(tmp_path: Path) -> None:
    """No ISO directory: start does nothing (here xl and xenstored do not even exist)."""
    provisioner = Provisioner(
        registry=None,  # type: ignore[arg-type]  # not reached
        xen=XenHost(XenSettings(xl_command=("/nonexistent/xl",), xenstored_path="/nonexistent")),
        isos=IsoDirectory(tmp_path / "iso"),
        documents=None,  # type: ignore[arg-type]
    )
    report = await provisioner.cleanup_leftovers()
    assert (report.isos, report.detached, report.keys) == ([], [], [])
    assert not (tmp_path / "iso").exists()
