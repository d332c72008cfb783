"""`metadata-server dhcp ...`: render the DHCP files from the registry, check them with
the daemon's own checker, and the lease hook that DHCP daemons run.

`render` and `check` read the registry directly (the database named by `--db` or the
configuration), so they work whether or not the server runs. `lease-hook` reports a
lease to the running server's admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from metadata_server.admin_token import load_client_token
from metadata_server.cli.client import AdminClient, CommandError
from metadata_server.cli.vm import url_of
from metadata_server.config import Settings
from metadata_server.dhcp.commands import DaemonError
from metadata_server.dhcp.render import DAEMON_FILES, DAEMONS, render
from metadata_server.dhcp.service import daemon_for, dhcp_plan
from metadata_server.dhcp.templates import template_environment
from metadata_server.errors import MetadataError
from metadata_server.store import open_store

LEASE_TIMEOUT = 5.0


def add_parsers(commands: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    p: argparse.ArgumentParser = commands.add_parser(
        "render", help="print (or write) the DHCP files the registry gives"
    )
    add_common(p)
    p.add_argument("--db", help="registry (default: from the configuration)")
    p.add_argument("--daemon", choices=DAEMONS, help="default: dhcp.daemon")
    p.add_argument(
        "--out", type=Path, help="a file (kea, dhcpd), or a directory for dnsmasq's two files"
    )
    p.set_defaults(handler=_render)

    p = commands.add_parser("check", help="render and check with the daemon's own checker")
    add_common(p)
    p.add_argument("--db", help="registry (default: from the configuration)")
    p.add_argument("--daemon", choices=DAEMONS, help="default: dhcp.daemon")
    p.set_defaults(handler=_check)

    p = commands.add_parser(
        "lease-hook",
        help="report a lease (dnsmasq --dhcp-script, Kea run_script)",
        description="dnsmasq runs it as: lease-hook add|old|del MAC IP [HOSTNAME]; "
        "Kea's run_script hook as: lease-hook EVENT (leases in LEASE4_*/LEASES4_AT<n>_*).",
    )
    add_common(p)
    p.add_argument("--url", help="admin API URL (default: from admin.listen)")
    p.add_argument("event")
    p.add_argument("args", nargs="*")
    p.set_defaults(handler=_lease_hook)


async def _files(settings: Settings, daemon: str) -> dict[str, str]:
    store = open_store(settings.db)
    await store.open()
    try:
        vms = await store.list()
    finally:
        await store.close()
    return render(daemon, vms, dhcp_plan(settings), template_environment(settings.dhcp.templates))


def _settings(
    args: argparse.Namespace, settings_from: Callable[..., Settings]
) -> tuple[Settings, str]:
    settings = settings_from(args, {"db": args.db})
    daemon = args.daemon or settings.dhcp.daemon
    if daemon == "none":
        raise CommandError("no DHCP daemon: give --daemon or set dhcp.daemon")
    if not settings.dhcp.subnets:
        raise CommandError("no subnets: configure [[dhcp.subnets]]")
    return settings, daemon


def _render(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings, daemon = _settings(args, settings_from)
    files = asyncio.run(_files(settings, daemon))
    if args.out is None:
        for name, text in files.items():
            if len(files) > 1:
                print(f"# ==> {name} <==")
            sys.stdout.write(text)
        return 0
    try:
        if len(DAEMON_FILES[daemon]) > 1:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (args.out / name).write_text(text)
        else:
            args.out.write_text(next(iter(files.values())))
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror}") from None
    return 0


def _check(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    settings, daemon = _settings(args, settings_from)
    settings = _with_daemon(settings, daemon)

    async def check() -> int:
        files = await _files(settings, daemon)
        await daemon_for(settings).check(files)
        return len(files)

    try:
        count = asyncio.run(check())
    except DaemonError as exc:
        raise CommandError(exc.detail) from None
    print(f"{daemon}: the rendered configuration passes its checker ({count} file(s))")
    return 0


def _with_daemon(settings: Settings, daemon: str) -> Settings:
    return replace(settings, dhcp=replace(settings.dhcp, daemon=daemon))


def lease_reports(event: str, args: Sequence[str], env: dict[str, str]) -> list[tuple[str, str]]:
    """(MAC, address) pairs that a hook call reports as held: dnsmasq's `add`/`old`, Kea's
    committed, renewed and rebound leases. Releases and expiries report nothing."""
    if event in ("add", "old"):
        if len(args) < 2:
            raise CommandError(f"dnsmasq's {event} needs MAC and IP")
        return [(args[0], args[1])]
    if event == "leases4_committed":
        count = int(env.get("LEASES4_SIZE", "0") or 0)
        return [
            (env.get(f"LEASES4_AT{i}_HWADDR", ""), env.get(f"LEASES4_AT{i}_ADDRESS", ""))
            for i in range(count)
        ]
    if event in ("lease4_renew", "lease4_rebind", "lease4_select"):
        return [(env.get("LEASE4_HWADDR", ""), env.get("LEASE4_ADDRESS", ""))]
    return []


def _lease_hook(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    reports = [
        (mac, ip)
        for mac, ip in lease_reports(args.event, args.args, dict(os.environ))
        if mac and ip
    ]
    if not reports:
        return 0
    settings = settings_from(args, {})
    client = AdminClient(args.url or url_of(settings), load_client_token(settings))

    async def report() -> None:
        for mac, address in reports:
            try:
                await client.request(
                    "POST",
                    f"/api/v1/vms/{mac}/lease",
                    json_body={"address": address},
                    timeout=LEASE_TIMEOUT,
                )
            except CommandError as exc:
                if "[HTTP 404]" in exc.message:
                    continue  # a MAC the registry does not know: nothing to record
                raise

    try:
        asyncio.run(report())
    except MetadataError as exc:
        raise CommandError(exc.detail) from None
    return 0
