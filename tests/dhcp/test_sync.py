"""The DHCP sync inside a real service: debounced renders, checks before writes, the last
good configuration kept on every failure, and the `dhcp` commands."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from metadata_server.app import MetadataService
from metadata_server.cli.lease_hook import lease_reports
from metadata_server.dhcp.sync import DhcpStatus
from metadata_server.errors import ConfigError, InvalidInput
from metadata_server.model import State
from tests.support.records import guest_body, mac_of
from tests.support.requirements import need_tools
from tests.support.service import make_settings

SUBNETS = [{"cidr": "198.18.0.0/16", "gateway": "198.18.0.1", "dns": ["198.18.0.1"]}]


def dhcp_flags(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "dhcp.daemon": "dnsmasq",
        "dhcp.subnets": SUBNETS,
        "dhcp.debounce_ms": 100,
        "dhcp.directory": str(tmp_path / "dhcp"),
        **extra,
    }


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[MetadataService]:
    need_tools("dnsmasq")
    svc = MetadataService(make_settings(tmp_path, **dhcp_flags(tmp_path)))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def settled(service: MetadataService, after: int) -> DhcpStatus:
    assert service.dhcp is not None
    for _ in range(200):
        status = service.dhcp.status()
        assert status is not None
        if status.syncs > after:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("no DHCP sync")


def bulk(count: int) -> list[dict[str, object]]:
    return [
        {"mac": f"02:00:c6:12:{n // 256:02x}:{n % 256:02x}", "hostname": f"g{n}",
         "ipv4": {"address": f"198.18.{n // 250 + 1}.{n % 250 + 2}", "prefix": 16}, "password_hash": "!"}
        for n in range(count)
    ]  # fmt: skip


async def test_a_bulk_import_is_one_render(service: MetadataService) -> None:
    assert service.registry is not None and service.dhcp is not None
    start = service.dhcp.status()
    assert start is not None and start.ok is True and start.renders == 1
    await service.registry.import_rows(bulk(10_000))
    status = await settled(service, start.syncs)
    assert status.ok is True and status.guests == 10_000
    assert status.renders == 2, "10,000 guests, one render"
    hosts = (service.settings.dhcp.directory / "dnsmasq-hosts").read_text().splitlines()
    assert len(hosts) == 10_000


async def test_state_reports_do_not_render(service: MetadataService) -> None:
    assert service.registry is not None and service.dhcp is not None
    await service.registry.put(mac_of(1), guest_body(1))
    first = await settled(service, 1)
    await service.registry.set_state(mac_of(1), State.CONFIGURED, "ok")
    await service.registry.rearm(mac_of(1))
    await asyncio.sleep(0.3)
    status = service.dhcp.status()
    assert status is not None and status.renders == first.renders


async def test_a_guest_outside_every_subnet_is_refused_when_registered(
    service: MetadataService,
) -> None:
    """Refused at the door (400 naming ipv4.address), so it never reaches a render."""
    assert service.registry is not None and service.dhcp is not None
    await service.registry.put(mac_of(1), guest_body(1))
    good = await settled(service, 1)
    with pytest.raises(InvalidInput) as error:
        await service.registry.put(
            mac_of(2), guest_body(2, ipv4={"address": "10.9.9.9", "prefix": 8})
        )
    assert error.value.field == "ipv4.address"
    assert "outside every configured DHCP subnet (198.18.0.0/16)" in error.value.detail
    assert await service.store.get(mac_of(2)) is None
    await asyncio.sleep(0.3)
    status = service.dhcp.status()
    assert status is not None and status.ok is True and status.syncs == good.syncs


async def test_a_refused_render_keeps_the_last_good_files(tmp_path: Path) -> None:
    """The daemon's checker refuses a configuration: nothing is written or reloaded, the
    last good files stay, and the checker's reason is in the status."""
    need_tools("dnsmasq")
    import dhcp_templates

    templates = tmp_path / "templates"
    templates.mkdir()
    packaged = Path(dhcp_templates.__file__).parent
    (templates / "dnsmasq-hosts.j2").write_text((packaged / "dnsmasq-hosts.j2").read_text())
    # A template edit that dnsmasq refuses once there are two guests.
    (templates / "dnsmasq.conf.j2").write_text(
        (packaged / "dnsmasq.conf.j2").read_text()
        + "{% if hosts | length > 1 %}no-such-dnsmasq-option\n{% endif %}"
    )
    settings = make_settings(tmp_path, **dhcp_flags(tmp_path, **{"dhcp.templates": str(templates)}))
    svc = MetadataService(settings)
    await svc.start()
    try:
        assert svc.registry is not None and svc.dhcp is not None
        await svc.registry.put(mac_of(1), guest_body(1))
        good = await settled(svc, 1)
        assert good.ok is True
        directory = settings.dhcp.directory
        before = (directory / "dnsmasq-hosts").read_text()
        await svc.registry.put(mac_of(2), guest_body(2))
        bad = await settled(svc, good.syncs)
        assert bad.ok is False and "dnsmasq refused it: dnsmasq: bad option" in str(bad.error)
        assert (directory / "dnsmasq-hosts").read_text() == before
        assert bad.writes == good.writes and bad.reloads == good.reloads
        await svc.registry.delete(mac_of(2))
        fixed = await settled(svc, bad.syncs)
        assert fixed.ok is True and fixed.error is None
    finally:
        await svc.stop()


async def test_unwritable_directory_and_missing_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tools("dnsmasq")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    svc = MetadataService(
        make_settings(tmp_path, **dhcp_flags(tmp_path, **{"dhcp.directory": str(blocker / "dhcp")}))
    )
    with pytest.raises(ConfigError, match=r"dhcp.directory: cannot create"):
        await svc.start()  # the directory cannot even be made: the server refuses to start

    svc = MetadataService(make_settings(tmp_path / "b", **dhcp_flags(tmp_path / "b")))
    await svc.start()
    try:
        assert svc.registry is not None and svc.dhcp is not None
        first = svc.dhcp.status()
        assert first is not None
        # dnsmasq uninstalled while the server runs (its lookup stands in for the removal):
        # the check cannot run, so nothing is written.
        monkeypatch.setattr("metadata_server.dhcp.daemons.find_binary", _missing)
        before = (svc.settings.dhcp.directory / "dnsmasq-hosts").read_text()
        await svc.registry.put(mac_of(1), guest_body(1))
        status = await settled(svc, first.syncs)
        assert status.ok is False and "dnsmasq is not installed" in str(status.error)
        assert (svc.settings.dhcp.directory / "dnsmasq-hosts").read_text() == before
    finally:
        await svc.stop()


def _missing(name: str) -> str:
    from metadata_server.dhcp.commands import DaemonError

    raise DaemonError(f"{name} is not installed (not found in PATH, /usr/sbin or /sbin)")


@pytest.mark.parametrize(
    ("event", "args", "env", "reports"),
    [
        ("add", ["02:00:00:00:00:01", "198.18.0.5", "web"], {}, [("02:00:00:00:00:01", "198.18.0.5")]),
        ("old", ["02:00:00:00:00:01", "198.18.0.5"], {}, [("02:00:00:00:00:01", "198.18.0.5")]),
        ("del", ["02:00:00:00:00:01", "198.18.0.5"], {}, []),
        ("init", [], {}, []),
        (
            "leases4_committed",
            [],
            {"LEASES4_SIZE": "2", "LEASES4_AT0_HWADDR": "02:00:00:00:00:01", "LEASES4_AT0_ADDRESS": "198.18.0.5",
             "LEASES4_AT1_HWADDR": "02:00:00:00:00:02", "LEASES4_AT1_ADDRESS": "198.18.0.6"},
            [("02:00:00:00:00:01", "198.18.0.5"), ("02:00:00:00:00:02", "198.18.0.6")],
        ),
        ("lease4_renew", [], {"LEASE4_HWADDR": "02:00:00:00:00:01", "LEASE4_ADDRESS": "198.18.0.5"},
         [("02:00:00:00:00:01", "198.18.0.5")]),
        ("lease4_release", [], {"LEASE4_HWADDR": "02:00:00:00:00:01", "LEASE4_ADDRESS": "198.18.0.5"}, []),
    ],
    ids=["dnsmasq-add", "dnsmasq-old", "dnsmasq-del", "dnsmasq-init", "kea-committed", "kea-renew", "kea-release"],
)  # fmt: skip
def test_lease_hook_arguments(
    event: str, args: list[str], env: dict[str, str], reports: list[tuple[str, str]]
) -> None:
    assert lease_reports(event, args, env) == reports


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_SERVER_")}
    full.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "metadata_server", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_dhcp_commands(tmp_path: Path) -> None:
    need_tools("dnsmasq", "kea-dhcp4", "dhcpd")
    svc = MetadataService(make_settings(tmp_path))
    await svc.start()
    assert svc.registry is not None
    await svc.registry.put(mac_of(1), guest_body(1))
    admin_url = svc.admin_address.url if svc.admin_address else ""
    await svc.stop()
    config = tmp_path / "config.toml"
    config.write_text(
        f'db = "{tmp_path}/registry.db"\n[dhcp]\ndaemon = "kea"\n'
        '[[dhcp.subnets]]\ncidr = "198.18.0.0/24"\ngateway = "198.18.0.1"\n'
    )
    code, out, err = await cli("dhcp", "render", "--config", str(config))
    assert code == 0, err
    assert json.loads(out)["Dhcp4"]["subnet4"][0]["reservations"][0]["hw-address"] == mac_of(1)
    code, out, _ = await cli(
        "dhcp",
        "render",
        "--config",
        str(config),
        "--daemon",
        "dnsmasq",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0 and (tmp_path / "out" / "dnsmasq-hosts").read_text().startswith(mac_of(1))
    for daemon in ("dnsmasq", "kea", "dhcpd"):
        code, out, err = await cli("dhcp", "check", "--config", str(config), "--daemon", daemon)
        assert code == 0, err
        assert out.startswith(f"{daemon}: the rendered configuration passes its checker")

    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('gateway = "198.18.0.1"', 'gateway = "198.18.0.11"'))
    code, out, err = await cli("dhcp", "check", "--config", str(bad))
    assert (
        code == 1
        and "is the gateway of 198.18.0.0/24" in err
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = await cli("dhcp", "render", "--config", str(config), "--out", "/proc/forbidden")
    assert code == 1 and "cannot write /proc/forbidden" in err
    assert admin_url


def test_the_lease_hook_starts_without_the_heavy_modules(tmp_path: Path) -> None:
    """A DHCP daemon runs the hook once per lease: with --url and --admin-token-file it must
    not load aiohttp, pyroute2 or the server (its start-up is Dom0's biggest cost in a
    boot storm otherwise)."""
    import subprocess

    token = tmp_path / "token"
    token.write_text("x" * 32)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "metadata_server", "dhcp", "lease-hook",
         "del", "02:00:00:00:00:01", "198.18.0.5", "--url", "http://127.0.0.1:9",
         "--admin-token-file", str(token)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    loaded = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = {
        name for name in loaded if name.split(".")[0] in ("aiohttp", "pyroute2", "jinja2", "yaml")
    }
    assert not heavy and "metadata_server.config" not in loaded, sorted(heavy)
    assert "metadata_server.cli.lease_hook" in loaded


def test_the_lease_hook_reports_errors_in_one_line(tmp_path: Path) -> None:
    import subprocess

    token = tmp_path / "token"
    token.write_text("x" * 32)
    result = subprocess.run(
        [sys.executable, "-m", "metadata_server", "dhcp", "lease-hook", "add", "02:00:00:00:00:01",
         "198.18.0.5", "--url", "http://127.0.0.1:9", "--admin-token-file", str(token)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "metadata-server: cannot reach the admin API at http://127.0.0.1:9"
    )
